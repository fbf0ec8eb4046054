"""`m365guard policy check`: validate policies.toml before the nightly job trusts it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    """Add the policy command group."""
    sub = typer.Typer(help="Check the policy file (policies.toml).", no_args_is_help=True)

    @sub.command("check")
    def check(
        config: Annotated[Path, typer.Option("--config", "-c",
                                             help="The policy file to check.")
                          ] = Path("policies.toml"),
    ) -> None:
        """Validate the policy file; print a summary, or one line saying what to fix."""
        import os
        from datetime import UTC, datetime

        from m365guard.config import RULE_IDS, load_policy
        from m365guard.preflight import check_local, configured_tenant

        policy = load_policy(config)
        # rosters, exports, the output folder and the state file, as the nightly checks them
        check_local(policy, policy.output.dir, configured_tenant(policy, os.environ),
                    datetime.now(UTC))
        enabled = [rule_id for rule_id in RULE_IDS if policy.rules.for_rule(rule_id).enabled]
        rosters = [str(path) for path in (policy.people.staff_roster, policy.people.parent_roster)
                   if path]
        typer.echo(f"OK {config}: {policy.school.name}")
        typer.echo(f"  school domains: {', '.join(sorted(policy.school.all_domains))}")
        typer.echo(f"  recognise people by: {', '.join(policy.people.recognise)}")
        typer.echo(f"  partner domains: {', '.join(policy.addresses.partner_domains) or 'none'}")
        typer.echo(f"  rosters: {', '.join(rosters) or 'none'}")
        typer.echo(f"  rules enabled: {len(enabled)} of {len(RULE_IDS)} ({', '.join(enabled)})")
        typer.echo(f"  local inputs usable: rosters, exports, output folder, state file "
                   f"{policy.state.path}")

    app.add_typer(sub, name="policy")
