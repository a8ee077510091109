"""``snnrun bench``: training and evaluation throughput of snnrun's backends and of
the peers (snnTorch, SpikingJelly, Norse) configured to the same math, each in its
own subprocess, with the exact fp32 roofline and activation memory.

``nets.py`` builds every implementation, ``worker.py`` measures one in a fresh
process, ``flops.py`` counts the training FLOPs and the machine's GEMM rate; the verb
(``snnrun/app/bench.py``) runs them one after another and writes the tables.
"""
