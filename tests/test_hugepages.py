"""The huge-pages re-execution: when it happens, what it executes, that it sets the tunable
once, the opt-out."""
import os
import subprocess
import sys

import pytest

from encdec import hugepages

PRINT_TUNABLES = ("from encdec import hugepages; hugepages.reexec_if_wanted(); "
                  "import os; print(os.environ.get('GLIBC_TUNABLES', ''))")


@pytest.fixture(name="supported")
def fixture_supported(monkeypatch):
  """A Linux with glibc 2.35 and THP in `madvise` mode, whatever this machine is."""
  monkeypatch.setattr(hugepages.sys, "platform", "linux")
  monkeypatch.setattr(hugepages.platform, "libc_ver", lambda: ("glibc", "2.35"))
  monkeypatch.setattr(hugepages, "_thp_available", lambda: True)
  for name in ("GLIBC_TUNABLES", "ENCDEC_HUGEPAGES"):
    monkeypatch.delenv(name, raising=False)


def test_tunable_is_appended_to_existing_ones():
  env = hugepages.environment_with_tunable({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"})
  assert env["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=2:" + hugepages.TUNABLE
  assert hugepages.environment_with_tunable({})["GLIBC_TUNABLES"] == hugepages.TUNABLE


def test_wanted_where_supported_unless_set_or_turned_off(supported):
  assert hugepages.wanted({})
  assert hugepages.wanted({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"})
  assert not hugepages.wanted({"GLIBC_TUNABLES": hugepages.TUNABLE})
  assert not hugepages.wanted({"ENCDEC_HUGEPAGES": "0"})
  assert hugepages.wanted({"ENCDEC_HUGEPAGES": "1"})


@pytest.mark.parametrize("libc, expected", [(("glibc", "2.35"), True), (("glibc", "2.40"), True),
                                            (("glibc", "2.34"), False), (("", ""), False),
                                            (("glibc", "unknown"), False)])
def test_needs_glibc_2_35(supported, monkeypatch, libc, expected):
  monkeypatch.setattr(hugepages.platform, "libc_ver", lambda: libc)
  assert hugepages.wanted({}) == expected


@pytest.mark.parametrize("mode, expected", [("always [madvise] never\n", True),
                                            ("[always] madvise never\n", True),
                                            ("always madvise [never]\n", False), (None, False)])
def test_needs_transparent_huge_pages(tmp_path, monkeypatch, mode, expected):
  setting = tmp_path / "enabled"
  if mode is not None:
    setting.write_text(mode)
  monkeypatch.setattr(hugepages, "THP_SETTING", str(setting))
  assert hugepages._thp_available() == expected  # pylint: disable=protected-access


def test_reexecutes_the_same_command_line_with_the_tunable(supported, monkeypatch):
  """Where supported: one execve of this interpreter, with this process's exact argv and its
  environment plus the tunable (nothing dropped)."""
  calls = []
  monkeypatch.setattr(hugepages.os, "execve", lambda *args: calls.append(args))
  monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.arena_max=2")
  monkeypatch.setenv("ENCDEC_TEST_MARKER", "kept")
  hugepages.reexec_if_wanted()
  assert len(calls) == 1
  executable, argv, env = calls[0]
  assert executable == sys.executable and argv == sys.orig_argv
  assert env["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=2:" + hugepages.TUNABLE
  assert {k: v for k, v in env.items() if k != "GLIBC_TUNABLES"} == {
      k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}


def test_no_reexecution_when_turned_off_or_done(supported, monkeypatch):
  monkeypatch.setattr(hugepages.os, "execve", lambda *args: pytest.fail("re-executed"))
  monkeypatch.setenv("ENCDEC_HUGEPAGES", "0")
  hugepages.reexec_if_wanted()
  monkeypatch.delenv("ENCDEC_HUGEPAGES")
  monkeypatch.setenv("GLIBC_TUNABLES", hugepages.TUNABLE)
  hugepages.reexec_if_wanted()


@pytest.mark.skipif(not hugepages.wanted({}), reason="needs Linux, glibc >= 2.35 and THP")
def test_a_process_reexecutes_itself_once_with_the_tunable():
  env = {k: v for k, v in os.environ.items()
         if k not in ("GLIBC_TUNABLES", "ENCDEC_HUGEPAGES")}
  result = subprocess.run([sys.executable, "-c", PRINT_TUNABLES], capture_output=True,
                          text=True, env=env, check=True, timeout=120)
  assert result.stdout.splitlines() == [hugepages.TUNABLE]   # printed once: one re-execution
  off = subprocess.run([sys.executable, "-c", PRINT_TUNABLES], capture_output=True, text=True,
                       env={**env, "ENCDEC_HUGEPAGES": "0"}, check=True, timeout=120)
  assert off.stdout.splitlines() == [""]
