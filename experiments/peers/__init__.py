"""Peers measured on encdec's own data: other systems trained and scored on our splits with our
metric code, so their numbers sit beside ours like for like (phonetisaurus_g2p.py: the WFST G2P
baseline on the CMUdict split). Their dependencies are optional."""
