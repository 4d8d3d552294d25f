"""The commands beyond train, sample, eval and backends, one module per topic.

cli.py defines the ``tinylm`` group and registers these; common.py holds what they share.
"""
