"""Block traces in, canonical labelled traces out.

Readers for fio latency logs, MSR Cambridge, SNIA SYSTOR '17, blkparse, the
LinnOS replayer, Alibaba and Tencent CBS (see ``registry.FORMATS``); the
canonical Parquet schema (``schema``); ``mittd trace info`` statistics
(``stats``); and collection of labelled traces from a real device with fio
(``collect``).
"""
