"""Peer: a PyTorch `nn.Transformer` train step on the shapes of encdec's bench config (CPU).

    python -m benchmarks.peers.torch_transformer [--steps 10] [--warmup 2] [--d 512] ...

The work of encdec's benchmarked train step (benchmarks/run.py on encdec/configs/bench.py):
a pre-LN encoder-decoder (d_model 512, 8 heads, d_ff 2048, 6 + 6 layers), one 8192-token
vocabulary for source, target and the tied output projection (logits scaled by 1/sqrt(d), as
encdec's), sinusoidal positions, dropout
0.1, a batch of 16 random sequences of 64 real tokens on each side, a causal target mask,
cross-entropy with label smoothing 0.1, gradients clipped to norm 1.0, AdamW. A step: zero
the gradients, forward, loss, backward, clip, update. Prints one JSON line: seconds per step
(mean of `--steps` timed steps after `--warmup` untimed ones), target tokens/s, the last loss,
the torch version and its threads.

With `--serve` it builds the model once and answers commands on stdin, one JSON line each, so
benchmarks/interleaved.py can time it turn about with encdec in another process:
`train N` (N steps, each timed), `gemm M K N REPEATS` (best fp32 [M, K] @ [K, N]),
`profile N` (torch.profiler over N steps, self CPU time per op), `quit`.

torch is an optional dependency of encdec: pip install -e '.[peers]'.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
import warnings
from typing import Any, Sequence

import torch
from torch import nn

FIRST_REAL_TOKEN = 4   # as benchmarks/run.py: ids 0-3 are PAD, BOS, EOS, UNK


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0],
                              formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  p.add_argument("--steps", type=int, default=10, help="timed train steps")
  p.add_argument("--warmup", type=int, default=2, help="untimed train steps first")
  p.add_argument("--d", type=int, default=512, help="d_model")
  p.add_argument("--layers", type=int, default=6, help="layers of the encoder and the decoder")
  p.add_argument("--heads", type=int, default=8)
  p.add_argument("--mlp", type=int, default=2048, help="d_ff")
  p.add_argument("--vocab", type=int, default=8192, help="shared by source and target")
  p.add_argument("--batch", type=int, default=16)
  p.add_argument("--len", type=int, default=64, help="source and target length")
  p.add_argument("--dropout", type=float, default=0.1)
  p.add_argument("--label_smoothing", type=float, default=0.1)
  p.add_argument("--lr", type=float, default=1e-4)
  p.add_argument("--clip", type=float, default=1.0, help="gradient norm clipping")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--serve", action="store_true", help="answer commands on stdin (see above)")
  return p.parse_args(argv)


def sinusoids(length: int, d: int) -> torch.Tensor:
  """[1, length, d]: sin on the even features, cos on the odd ones (Vaswani et al.)."""
  position = torch.arange(length, dtype=torch.float32)[:, None]              # [L, 1]
  rate = torch.exp(torch.arange(0, d, 2, dtype=torch.float32) * (-math.log(10000.0) / d))
  table = torch.zeros(length, d)
  table[:, 0::2] = torch.sin(position * rate)
  table[:, 1::2] = torch.cos(position * rate)
  return table[None]


class Seq2Seq(nn.Module):
  """Token ids in, logits out: embeddings + positions, `nn.Transformer`, the output projection
  tied to the embedding."""

  def __init__(self, args: argparse.Namespace):
    super().__init__()
    self.scale = math.sqrt(args.d)
    self.embed = nn.Embedding(args.vocab, args.d)                         # N(0, 1), as encdec's
    self.dropout = nn.Dropout(args.dropout)
    with warnings.catch_warnings():   # "enable_nested_tensor is True, but ...": pre-LN has none
      warnings.simplefilter("ignore", UserWarning)
      self.transformer = nn.Transformer(args.d, args.heads, args.layers, args.layers, args.mlp,
                                        args.dropout, batch_first=True, norm_first=True)
    self.register_buffer("positions", sinusoids(args.len, args.d), persistent=False)
    self.register_buffer("causal", nn.Transformer.generate_square_subsequent_mask(args.len),
                         persistent=False)

  def inputs(self, tokens: torch.Tensor) -> torch.Tensor:
    """[B, L] --> [B, L, d]."""
    length = tokens.shape[1]
    return self.dropout(self.embed(tokens) + self.positions[:, :length])

  def forward(self, src: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
    """[B, S], [B, T] --> logits [B, T, V]."""
    length = tgt_in.shape[1]
    hidden = self.transformer(self.inputs(src), self.inputs(tgt_in),
                              tgt_mask=self.causal[:length, :length], tgt_is_causal=True)
    return hidden @ self.embed.weight.T / self.scale


def random_batch(args: argparse.Namespace, generator: torch.Generator) -> dict[str, torch.Tensor]:
  """Random real tokens (no padding): src, tgt_in, tgt_out, each [batch, len]."""
  shape = (args.batch, args.len)
  return {key: torch.randint(FIRST_REAL_TOKEN, args.vocab, shape, generator=generator)
          for key in ("src", "tgt_in", "tgt_out")}


def train_step(model: Seq2Seq, optimizer: torch.optim.Optimizer, batch: dict[str, torch.Tensor],
               args: argparse.Namespace) -> float:
  """One update; returns the loss."""
  optimizer.zero_grad(set_to_none=True)
  logits = model(batch["src"], batch["tgt_in"])                            # [B, T, V]
  loss = nn.functional.cross_entropy(logits.flatten(0, 1), batch["tgt_out"].flatten(),
                                     label_smoothing=args.label_smoothing)
  loss.backward()
  nn.utils.clip_grad_norm_(model.parameters(), args.clip)
  optimizer.step()
  return loss.item()


def timed_steps(model, optimizer, batch, args, count: int) -> tuple[list[float], float]:
  """(seconds of each of `count` train steps, the last loss)."""
  times, loss = [], float("nan")
  for _ in range(count):
    start = time.perf_counter()
    loss = train_step(model, optimizer, batch, args)
    times.append(time.perf_counter() - start)
  return times, loss


def gemm_seconds(m: int, k: int, n: int, repeats: int) -> float:
  """Best wall time of a float32 [m, k] @ [k, n] over `repeats` (after one warm-up)."""
  a, b = torch.randn(m, k), torch.randn(k, n)
  torch.mm(a, b)
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    torch.mm(a, b)
    best = min(best, time.perf_counter() - start)
  return best


def op_profile(model, optimizer, batch, args, count: int) -> dict[str, float]:
  """Self CPU seconds per aten op over `count` train steps (torch.profiler)."""
  with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
    timed_steps(model, optimizer, batch, args, count)
  return {e.key: e.self_cpu_time_total / 1e6 for e in prof.key_averages()
          if e.self_cpu_time_total > 0}


def serve(model, optimizer, batch, args) -> None:
  """Answer `train N`, `gemm M K N R`, `profile N`, `quit` on stdin, a JSON line each."""
  for line in sys.stdin:
    command, *numbers = line.split()
    values = [int(x) for x in numbers]
    if command == "quit":
      return
    if command == "train":
      times, loss = timed_steps(model, optimizer, batch, args, values[0])
      reply = {"step_s": times, "loss": loss}
    elif command == "gemm":
      reply = {"gemm_s": gemm_seconds(*values)}
    elif command == "profile":
      reply = {"op_self_s": op_profile(model, optimizer, batch, args, values[0])}
    else:
      reply = {"error": f"unknown command {command!r}"}
    print(json.dumps(reply), flush=True)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  args = parse_args(argv)
  torch.manual_seed(args.seed)
  model = Seq2Seq(args).train()
  optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
  batch = random_batch(args, torch.Generator().manual_seed(args.seed))
  for _ in range(args.warmup):
    train_step(model, optimizer, batch, args)
  if args.serve:
    print(json.dumps({"ready": True, "torch": torch.__version__,
                      "threads": torch.get_num_threads()}), flush=True)
    serve(model, optimizer, batch, args)
    return {}
  start = time.perf_counter()
  for _ in range(args.steps):
    loss = train_step(model, optimizer, batch, args)
  step_s = (time.perf_counter() - start) / args.steps
  result = {"peer": "torch-nn.Transformer", "torch": torch.__version__,
            "threads": torch.get_num_threads(), "steps": args.steps, "step_s": step_s,
            "tgt_tokens_per_s": args.batch * args.len / step_s, "loss": loss}
  print(json.dumps(result), flush=True)
  return result


if __name__ == "__main__":
  main()
