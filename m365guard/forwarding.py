"""Mailbox forwarding as it stands: the latest observed setting per mailbox.

Mailbox forwarding is a state, observed as a series of settings (audit records, the Exchange
export): the latest observation per mailbox is what holds now. The forwarding rule and the
inventory the ledger records both read it through `latest_forwarding`, so they cannot disagree
on which forward is current or how its address is written.

Why it is remembered: the audit log keeps a Set-Mailbox record for 180 days, but the forward it
set stays on until someone changes it. State keeps the latest setting per mailbox
(`StateDB.forwarding_state`), and each night's observations are laid over it (`remembered`):
a setting changes only on evidence, a later audit record or a newer Exchange export.
"""

from __future__ import annotations

import pandas as pd

from m365guard.tables import conform


def remembered(known: pd.DataFrame, tonight: pd.DataFrame) -> pd.DataFrame:
    """Tonight's observations laid over the last known setting per mailbox: the known rows
    first, so an observation at the same time from tonight wins in `latest_forwarding`."""
    frames = [conform("mailbox_forwarding", table) for table in (known, tonight)
              if not table.empty]
    if not frames:
        return conform("mailbox_forwarding", tonight)
    return conform("mailbox_forwarding", pd.concat(frames, ignore_index=True))


def latest_forwarding(history: pd.DataFrame, *, keep_cleared: bool = False) -> pd.DataFrame:
    """The latest observation per mailbox (case-insensitive), its address as `target`.

    `target` is the address lower-cased without an `smtp:` prefix, "" where forwarding was
    cleared (those rows are dropped unless `keep_cleared`). Columns: the mailbox_forwarding
    schema plus `target`, in observation order.
    """
    history = conform("mailbox_forwarding", history)
    latest = (history.assign(mailbox_key=history["mailbox"].str.lower())
              .sort_values("observed_at", kind="stable")
              .drop_duplicates("mailbox_key", keep="last")
              .drop(columns="mailbox_key"))
    address = latest["address"].str.strip().str.replace(r"^(?i:smtp:)", "", regex=True)
    latest = latest.assign(target=address.fillna("").str.lower())
    if not keep_cleared:
        latest = latest[(latest["target"] != "").to_numpy(bool)]
    return latest
