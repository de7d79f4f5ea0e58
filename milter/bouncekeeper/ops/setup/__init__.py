"""`bouncekeeper setup MTA`: merge bouncekeeper into an MTA's existing configuration, show it, undo it.

Each MTA module (`postfix`, `sendmail`, `exim`) reads what the operator has and returns a `plan.Plan`:
the whole new text of every file it would touch, computed by merging into what is there. This package
prints that plan as a unified diff, applies it only when asked (after the MTA's own check of the staged
result), and keeps the byte-exact originals so that `--undo` restores them.
"""
