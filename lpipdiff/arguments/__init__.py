"""What every command shares (``lpipdiff``, its train and evaluate commands, the benchmarks):
argparse types over :mod:`lpipdiff.checks`, the options of restoring commands and the help layout,
and how a command ends on a user's mistake. Below the commands, so that none imports another."""
