"""The `encdec` command line.

    encdec train  [--config PATH[:ARG]] [--workdir DIR] [--config.KEY=VALUE ...]
    encdec train-batch [--config PATH[:ARG]] --workdir DIR ... --seeds S,... [--vary KEY=V,...]
                       [--config.KEY=VALUE ...]
    encdec eval   --workdir DIR [--split test] [--beam N] [--step S] [--average N]
                  [--plot-attention K] [--config.mesh.KEY=VALUE ...]
    encdec decode --workdir DIR [--beam N] [--config.mesh.KEY=VALUE ...]
                  [WORD_OR_SENTENCE ...]   (else lines from stdin, streamed)
    encdec sweep  --config PATH[:ARG] --sweep NAME --workdir DIR [--jobs N] [--batch N] [--dry-run]
                  [--launcher local|slurm|tpu_vm [--launcher-args ARGS]] [--config.KEY=VALUE ...]
    encdec report DIR [--baseline GROUP] [--metric KEY]
    encdec import-hf SRC_DIR --workdir DIR      (a Hugging Face T5 / BART / Marian checkpoint)
    encdec export-hf WORKDIR OUT_DIR [--step S]

A user error (encdec.errors.UserError: a bad config key or value, an unknown task or variant,
missing data, an unreadable checkpoint, a workdir that belongs to another config) prints one
line to stderr and exits with status 2; set ENCDEC_DEBUG=1 to see the traceback instead. Any
other exception is a bug in encdec: it keeps its traceback and exits with status 1.

Process-wide settings (logging handlers and filters, exception hooks) are made here, by the
command line, never by library calls; `encdec/__main__.py` does the rest (huge pages,
matplotlib's backend) before anything heavy is imported.
"""
from __future__ import annotations

import argparse
import logging as py_logging
import os
import shlex
import sys
import traceback

from absl import flags, logging

from encdec import config as config_lib
from encdec.errors import UserError


MESH_EPILOG = ("Only the parameters are loaded, on one device; --config.mesh.data/fsdp/tensor=N "
               "shard them over a device mesh instead (axes not given are 1).")


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="encdec", description=__doc__.split("\n")[0])
  sub = parser.add_subparsers(dest="command", required=True)
  train = sub.add_parser("train", help="train (or resume) a model in a workdir",
                         epilog="Override any config key with --config.KEY=VALUE, "
                                "e.g. --config.model.d_model=128.")
  train.add_argument("--config", default=None,
                     help="PATH[:ARG] of a config file, or NAME[:ARG] of a packaged one "
                          "(default: g2p_cmudict)")
  train.add_argument("--workdir", default="runs/g2p_cmudict",
                     help="run directory: config.json, metrics.jsonl, checkpoints/, eval/")
  multi = train.add_argument_group("multi-process (one process per host or per GPU)")
  multi.add_argument("--coordinator_address", default=None, help="HOST:PORT of process 0")
  multi.add_argument("--num_processes", type=int, default=None)
  multi.add_argument("--process_id", type=int, default=None)
  multi.add_argument("--distributed", choices=("off", "auto"), default="off",
                     help="auto: jax.distributed.initialize() detects SLURM / Cloud TPU VMs")
  _add_train_batch_parser(sub)
  evaluate = sub.add_parser("eval", help="decode a split with a trained model and score it",
                            epilog=MESH_EPILOG)
  _add_run_args(evaluate)
  evaluate.add_argument("--split", default=None, help="split to decode (default: eval.final_split)")
  evaluate.add_argument("--max-examples", type=int, default=0, help="0: the whole split")
  evaluate.add_argument("--plot-attention", type=int, default=0, metavar="K",
                        help="write cross-attention heatmaps of K examples to WORKDIR/eval/")
  decode = sub.add_parser("decode", help="decode inputs given as arguments or stdin lines",
                          epilog="Stdin is decoded as it arrives: a batch when it is full, when "
                                 "the input ends, or when no more input is ready. " + MESH_EPILOG)
  _add_run_args(decode)
  decode.add_argument("inputs", nargs="*", help="sources (default: read lines from stdin)")
  _add_sweep_parser(sub)
  _add_report_parser(sub)
  _add_hf_parsers(sub)
  return parser


def _add_hf_parsers(sub) -> None:
  imp = sub.add_parser("import-hf", help="a Hugging Face checkpoint directory -> a run directory",
                       epilog="SRC_DIR: config.json + model.safetensors (+ tokenizer files) of "
                              "T5 (v1.0, v1.1, mT5), BART or Marian, e.g. from `huggingface-cli "
                              "download MODEL --local-dir SRC_DIR`. Nothing is downloaded.")
  imp.add_argument("src_dir", help="the checkpoint directory")
  imp.add_argument("--workdir", required=True, help="new run directory to write")
  exp = sub.add_parser("export-hf", help="a run imported (or fine-tuned from an import) -> a "
                                         "Hugging Face checkpoint directory")
  exp.add_argument("workdir", help="run directory")
  exp.add_argument("out_dir", help="new directory for config.json, model.safetensors, tokenizer")
  exp.add_argument("--step", type=int, default=None, help="checkpoint step (default: newest)")


def _add_train_batch_parser(sub) -> None:
  batch = sub.add_parser(
      "train-batch", help="train (or resume) several seeds of one config in one compiled step",
      epilog="Every member is a normal run in its own --workdir (as `encdec train` writes it); "
             "--config.KEY=VALUE overrides apply to all. One device, one process.")
  batch.add_argument("--config", default=None, help="PATH[:ARG] or NAME[:ARG], as for train")
  batch.add_argument("--workdir", action="append", required=True,
                     help="a member's run directory; give one per seed, in --seeds order")
  batch.add_argument("--seeds", required=True, help="train.seed of each member, e.g. 0,1,2")
  batch.add_argument("--vary", action="append", default=[], metavar="KEY=V0,V1,...",
                     help="a per-run hyperparameter's value for each member, in --seeds order, "
                          "e.g. optim.learning_rate=1e-3,3e-3 (keys: "
                          f"{', '.join(config_lib.HPARAM_KEYS)})")


def _add_sweep_parser(sub) -> None:
  sweep = sub.add_parser("sweep", help="train every run of a config's named sweep",
                         epilog="--config.KEY=VALUE overrides apply to every run; the sweep's "
                                "own overrides come on top.")
  sweep.add_argument("--config", required=True, help="PATH[:ARG] of a config file with SWEEPS")
  sweep.add_argument("--sweep", required=True, help="a key of the config file's SWEEPS dict")
  sweep.add_argument("--workdir", required=True,
                     help="sweep directory: sweep.json and one run directory per run")
  sweep.add_argument("--jobs", type=int, default=1, help="runs at a time (--launcher local)")
  sweep.add_argument("--batch", type=int, default=1,
                     help="train up to N runs that differ only in their seed and per-run "
                          "hyperparameters (see train-batch --vary) together, in one "
                          "`encdec train-batch` process (--launcher local)")
  sweep.add_argument("--launcher", choices=("local", "slurm", "tpu_vm"), default="local",
                     help="local: subprocesses here; slurm / tpu_vm: encdec.launch")
  sweep.add_argument("--launcher-args", default="",
                     help="flags of `python -m encdec.launch.LAUNCHER`, one quoted string, e.g. "
                          "'--nodes 1 --gpus-per-node 8 --partition gpu'")
  sweep.add_argument("--dry-run", action="store_true",
                     help="print the commands (or what the launcher would submit), run nothing")


def _add_report_parser(sub) -> None:
  report = sub.add_parser("report", help="compare the runs of a sweep: report.md + PNG plots")
  report.add_argument("directory", help="a sweep directory (or any directory of run dirs)")
  report.add_argument("--baseline", default=None,
                      help="group name or model.cross_attention value to test against "
                           "(default: the mha group, else the first)")
  report.add_argument("--metric", default=None,
                      help="main metric key of the eval json (default: wer, bleu or exact_match; "
                           "nll / perplexity: the references' under teacher forcing)")
  report.add_argument("--resamples", type=int, default=1000, help="paired bootstrap resamples")
  report.add_argument("--no-decode-speed", action="store_true",
                      help="do not measure decode speed (use only measurements cached earlier)")


def _add_run_args(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--workdir", required=True, help="run directory of `encdec train`")
  parser.add_argument("--step", type=int, default=None, help="checkpoint step (default: newest)")
  parser.add_argument("--average", type=int, default=1, metavar="N",
                      help="average the parameters of the N newest checkpoints up to --step")
  parser.add_argument("--beam", type=int, default=None,
                      help="beam size (default: decode.beam_size)")
  parser.add_argument("--alpha", type=float, default=None,
                      help="length penalty (default: decode.alpha)")
  parser.add_argument("--batch-size", type=int, default=None)


class _OwnInfoOnly(py_logging.Filter):
  """INFO lines from encdec itself; libraries (Orbax, grain, TFDS) only at WARNING and above,
  one line each: their tracebacks (e.g. Orbax's background threads on a full disk) are left
  to the one-line error encdec raises for them. ENCDEC_DEBUG=1 keeps everything."""

  def filter(self, record: py_logging.LogRecord) -> bool:
    if f"{os.sep}encdec{os.sep}" in record.pathname or os.environ.get("ENCDEC_DEBUG"):
      return True
    if record.levelno < py_logging.WARNING or (
        record.name == "asyncio" and record.msg == "Task exception was never retrieved"):
      return False  # the latter: a failed Orbax write that encdec reports itself
    record.exc_info, record.exc_text, record.stack_info = None, None, None
    record.msg, record.args = record.getMessage().splitlines()[0][:300], None
    return True


def _is_closed_event_loop_error(exc_type, exc: BaseException, tb) -> bool:
  """True for asyncio's "Event loop is closed", as raised in TensorStore's write callbacks
  that outlive Orbax's event loop after a failed checkpoint write (e.g. a full disk)."""
  frames = traceback.extract_tb(tb)
  return (exc_type is RuntimeError and str(exc) == "Event loop is closed" and bool(frames)
          and f"{os.sep}asyncio{os.sep}" in frames[-1].filename)


def _quiet_closed_event_loop_errors() -> None:
  """Drop those tracebacks (C++ callbacks report them through sys.unraisablehook, or
  sys.excepthook); encdec has already reported the failure in one line. ENCDEC_DEBUG=1 keeps
  them."""
  if os.environ.get("ENCDEC_DEBUG") or getattr(sys.excepthook, "encdec_quiet", False):
    return
  default_excepthook, default_unraisablehook = sys.excepthook, sys.unraisablehook

  def excepthook(exc_type, exc, tb):
    if not _is_closed_event_loop_error(exc_type, exc, tb):
      default_excepthook(exc_type, exc, tb)

  def unraisablehook(unraisable):
    if not _is_closed_event_loop_error(unraisable.exc_type, unraisable.exc_value,
                                       unraisable.exc_traceback):
      default_unraisablehook(unraisable)

  excepthook.encdec_quiet = True
  sys.excepthook, sys.unraisablehook = excepthook, unraisablehook


def _setup_logging() -> None:
  flags.FLAGS.mark_as_parsed()  # absl flags are unused here: argparse reads the command line
  logging.set_verbosity(logging.INFO)
  handler = logging.get_absl_handler()
  handler.setFormatter(py_logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
  handler.addFilter(_OwnInfoOnly())
  logging.use_absl_handler()


def cmd_train(args, overrides) -> int:
  from encdec import parallel  # pylint: disable=import-outside-toplevel (slow: jax)
  from encdec.train import loop  # pylint: disable=import-outside-toplevel
  from encdec.train.preemption import Preempted  # pylint: disable=import-outside-toplevel
  cfg = config_lib.load(args.config, overrides)
  parallel.initialize_distributed(args.coordinator_address, args.num_processes, args.process_id,
                                  auto=args.distributed == "auto")
  if parallel.is_secondary_process():
    logging.set_verbosity(logging.WARNING)  # progress and results are printed by process 0
  try:
    loop.train(cfg, args.workdir)
  except Preempted:
    parallel.shutdown_distributed()
    raise
  parallel.shutdown_distributed()
  return 0


def cmd_train_batch(args, overrides) -> int:
  """Exit 0 when every member finished; 2 (a line per failed member) when one diverged."""
  from encdec.train import batched  # pylint: disable=import-outside-toplevel (slow: jax)
  cfgs = [config_lib.load(args.config, {**overrides, **member})
          for member in _member_overrides(args)]
  failed = [o for o in batched.train(cfgs, args.workdir) if o.error]
  for outcome in failed:
    print(f"encdec train-batch: {outcome.workdir}: {outcome.error}", file=sys.stderr)
  return 2 if failed else 0


def _member_overrides(args) -> list[dict[str, object]]:
  """train-batch's --seeds and --vary --> each member's own overrides, in --workdir order."""
  try:
    seeds = [int(s) for s in args.seeds.split(",")]
  except ValueError as e:
    raise config_lib.ConfigError(f"--seeds={args.seeds!r}: expected integers like 0,1,2") from e
  if len(seeds) != len(args.workdir):
    raise config_lib.ConfigError(f"--seeds lists {len(seeds)} seeds for {len(args.workdir)} "
                                 "--workdir; give one workdir per seed")
  members = [{"train.seed": s} for s in seeds]
  for arg in args.vary:
    key, _, values = arg.partition("=")
    if key not in config_lib.HPARAM_KEYS or len(values.split(",")) != len(seeds):
      raise config_lib.ConfigError(
          f"--vary {arg!r}: expected KEY=V0,V1,... with one value per seed, KEY one of "
          f"{', '.join(config_lib.HPARAM_KEYS)}")
    for member, value in zip(members, values.split(",")):
      member.update(config_lib.parse_overrides([f"--config.{key}={value}"]))
  return members


def cmd_eval(args, overrides) -> int:
  from encdec import inference, run  # pylint: disable=import-outside-toplevel
  run.mesh_config(overrides)           # only --config.mesh.*: refused before anything loads
  inference.evaluate_run(args.workdir, split=args.split, step=args.step, beam_size=args.beam,
                         alpha=args.alpha, batch_size=args.batch_size,
                         max_examples=args.max_examples, plot_attention=args.plot_attention,
                         mesh_overrides=overrides, average=args.average)
  return 0


def cmd_decode(args, overrides) -> int:
  """One 'source<TAB>output' line per input, printed as soon as its batch is decoded. Stdin is
  read as a stream: a batch is decoded when full, at the end, or when no more input is ready
  (so typed lines are answered at once, and a pipe works as a filter)."""
  from encdec import inference, run  # pylint: disable=import-outside-toplevel
  run.mesh_config(overrides)
  lines = args.inputs or inference.stdin_lines(sys.stdin.fileno(), sys.stdin.encoding)
  for source, output in inference.decode_lines(args.workdir, lines, step=args.step,
                                               beam_size=args.beam, alpha=args.alpha,
                                               batch_size=args.batch_size,
                                               mesh_overrides=overrides,
                                               average=args.average):
    print(f"{source}\t{output}", flush=True)
  return 0


def cmd_sweep(args, overrides) -> int:
  from encdec import sweep  # pylint: disable=import-outside-toplevel
  return sweep.run_sweep(args.config, args.sweep, args.workdir, base_overrides=overrides,
                         jobs=args.jobs, launcher=args.launcher,
                         launcher_args=shlex.split(args.launcher_args), dry_run=args.dry_run,
                         command=sweep.cli_command(args.argv), batch=args.batch)


def cmd_report(args, overrides) -> int:
  from encdec import report  # pylint: disable=import-outside-toplevel (slow: jax, matplotlib)
  path = report.write_report(args.directory, baseline=args.baseline, metric=args.metric,
                             resamples=args.resamples, measure_speed=not args.no_decode_speed)
  print(path)
  return 0


def cmd_import_hf(args, overrides) -> int:
  from encdec.hf import importer  # pylint: disable=import-outside-toplevel (jax)
  print(importer.import_checkpoint(args.src_dir, args.workdir))
  return 0


def cmd_export_hf(args, overrides) -> int:
  from encdec.hf import exporter  # pylint: disable=import-outside-toplevel (jax)
  print(exporter.export_run(args.workdir, args.out_dir, args.step))
  return 0


COMMANDS = {"train": cmd_train, "train-batch": cmd_train_batch, "eval": cmd_eval,
            "decode": cmd_decode, "sweep": cmd_sweep, "report": cmd_report,
            "import-hf": cmd_import_hf, "export-hf": cmd_export_hf}
# Commands that take --config.KEY=VALUE overrides (eval and decode: only mesh.* keys).
WITH_OVERRIDES = ("train", "train-batch", "sweep", "eval", "decode")


def main(argv: list[str] | None = None) -> int:
  """Run one `encdec` command; returns the exit status (0, or 2 for a user error)."""
  from encdec.train.preemption import Preempted  # pylint: disable=import-outside-toplevel (jax)
  argv = sys.argv[1:] if argv is None else list(argv)
  args, rest = _parser().parse_known_args(argv)
  args.argv = argv  # recorded by `encdec sweep` in sweep.json
  _setup_logging()
  _quiet_closed_event_loop_errors()
  try:
    if rest and args.command not in WITH_OVERRIDES:
      raise config_lib.ConfigError(f"unrecognised arguments: {' '.join(rest)}")
    overrides = config_lib.parse_overrides(rest)
    return COMMANDS[args.command](args, overrides)
  except Preempted as e:
    print(f"encdec {args.command}: {e}", file=sys.stderr)
    return 0
  except UserError as e:
    if os.environ.get("ENCDEC_DEBUG"):
      raise
    print(f"encdec {args.command}: error: {str(e).splitlines()[0] if str(e) else repr(e)}",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
  sys.exit(main())
