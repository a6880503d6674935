"""Peers: other implementations measured in the same benchmark run as encdec, on the same
shapes (benchmarks/run.py --peers). Each is a script run in its own process, printing one JSON
line; its dependencies are optional (pip install -e '.[peers]')."""
