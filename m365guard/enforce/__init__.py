"""Enforcement: plan, approve, apply, verify and undo fixes for open findings.

A school must act on its policy the way it treats staff: planned from the object's exact
current state, approved by a second named person, applied only while the object is still as
planned, journalled before and after every call, checked the next night, and reversible.
`plan.py` holds the vocabulary and the plan file, `planner.py` builds plans, `journal.py` the
state tables, `apply.py` and `undo.py` the writes, `verify.py` the nightly check.
"""
