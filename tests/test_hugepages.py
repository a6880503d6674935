"""The huge-pages re-execution: when it happens, that it sets the tunable once, the opt-out."""
import os
import subprocess
import sys

import pytest

from encdec import hugepages

PRINT_TUNABLES = ("from encdec import hugepages; hugepages.reexec_if_wanted(); "
                  "import os; print(os.environ.get('GLIBC_TUNABLES', ''))")


def test_tunable_is_appended_to_existing_ones():
  env = hugepages.environment_with_tunable({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"})
  assert env["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=2:" + hugepages.TUNABLE
  assert hugepages.environment_with_tunable({})["GLIBC_TUNABLES"] == hugepages.TUNABLE


def test_not_wanted_once_set_or_when_turned_off():
  assert not hugepages.wanted({"GLIBC_TUNABLES": hugepages.TUNABLE})
  assert not hugepages.wanted({"ENCDEC_HUGEPAGES": "0"})


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
