"""``temu-sync webhooks subscribe [--shop ID]...``: calls ``bg.tmc.message.update`` for each
shop with the configured ``[webhooks] events`` (at most one call a second per app) and says
per shop what Temu answered, in words.

A shop whose access token lacks ``bg.tmc.message.update`` (interface.md "Access tokens", the
daily check) is refused before the call, naming the missing API type.

Exit codes: 0 every shop subscribed; 3 some did, others were refused; 1 none was."""

from __future__ import annotations

from engine.cli.commands import CommandError, open_runtime
from engine.config import Settings
from engine.errors import ExitCode
from engine.sync.tokens import TokenScreen
from engine.temu.subscriptions import SubscribeResult, subscribe_shops
from engine.temu.token_info import WEBHOOK_SCOPES

__all__ = ["cmd_webhooks_subscribe"]


async def cmd_webhooks_subscribe(settings: Settings, shops: list[str] | None) -> int:
    known = [s.id for s in settings.shops]
    unknown = sorted(set(shops or ()) - set(known))
    if unknown:
        raise CommandError(f"--shop names no configured shop: {', '.join(unknown)}", ExitCode.USAGE)
    wanted = shops or known
    rt = await open_runtime(settings)
    try:
        screen = TokenScreen(rt.token_gate(WEBHOOK_SCOPES))
        usable = await screen.usable(wanted)
        subscribed = await subscribe_shops(
            [rt.shop_apis[s] for s in usable], list(settings.webhooks.events)
        )
    finally:
        await rt.close()
    by_shop = {r.shop_id: r for r in subscribed}
    by_shop.update({s: SubscribeResult(s, False, why) for s, why in screen.refused.items()})
    results = [by_shop[s] for s in wanted]
    for r in results:
        print(f"{r.shop_id}: {'subscribed' if r.ok else 'refused'}: {r.message}")
    ok = sum(1 for r in results if r.ok)
    if ok == len(results):
        return ExitCode.OK
    return ExitCode.PARTIAL if ok else ExitCode.FAILURE
