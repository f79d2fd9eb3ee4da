"""Differential privacy: the accountant (dp-accounting, the optional extra ``accord[dp]``) and
what central, local and DP-SGD mechanisms share. See docs/privacy.md."""
