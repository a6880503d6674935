"""The configs shipped with encdec, one file per experiment family (big_vision style).

`--config NAME[:ARG]` (e.g. `g2p_cmudict:size=base`) picks one of these; `--config PATH[:ARG]`
any config file. Each defines `get_config(arg=None) -> ConfigDict` and may define `SWEEPS`.
"""
