"""Who acts on what, and getting it to them: next steps per check, alerts, the weekly page sent."""
