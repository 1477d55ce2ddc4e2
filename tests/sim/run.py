"""`make simulate`: which strategy wastes the least quota and blocks the user the least.

A week of Codex work, minute by minute, over accounts with different plans and reset times,
routed by the gateway's own `choose_account` (sticky conversations, --switch-at 95) with each
strategy, live conversations staying on their account until it refuses (the default) or leaving
it at --switch-at (`--switch-live`). Reported per strategy: hours the user was blocked (work to
do, no account usable), weekly quota that reset unused (its share of all weekly quota that reset
during the week), the work served, account switches (the serving account changed from one turn
to the next) and the turns that lost their prompt cache (a live conversation served by another
account than its previous turn: its whole input is processed uncached). Deterministic (seeded);
no network; a few seconds.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

from cao.addons.routing import choose_account
from cao.config.auth import AccountAuth, LoginState
from cao.config.pool import AccountView, Strategy
from cao.config.state import AccountState, UsageWindow

WEEK = 7 * 24 * 60  # minutes
FIVE_HOURS = 300
SWITCH_AT = 95.0
SEEDS = range(5)


@dataclass
class Plan:
    five_hour: float  # units of work per 5-hour window
    weekly: float  # units per week


PLANS = {"pro": Plan(400, 3000), "plus": Plan(80, 700)}


@dataclass
class SimAccount:
    name: str
    plan: Plan
    weekly_reset: float  # minute of the week its weekly window first resets
    used_week: float = 0.0
    used_5h: float = 0.0
    window_5h_ends: float | None = None  # a 5-hour window starts at the first use after one
    wasted: float = 0.0  # weekly quota that reset unused
    reset_capacity: float = 0.0  # weekly quota of the windows that reset during the week

    def tick(self, now: float) -> None:
        if self.window_5h_ends is not None and now >= self.window_5h_ends:
            self.used_5h, self.window_5h_ends = 0.0, None
        if now >= self.weekly_reset:
            self.wasted += max(0.0, self.plan.weekly - self.used_week)
            self.reset_capacity += self.plan.weekly
            self.used_week = 0.0
            self.weekly_reset += WEEK

    def use(self, now: float, units: float) -> None:
        if self.window_5h_ends is None:
            self.window_5h_ends = now + FIVE_HOURS
        self.used_5h += units
        self.used_week += units

    def view(self, now: float, index: int) -> AccountView:
        five = min(100.0, 100 * self.used_5h / self.plan.five_hour)
        week = min(100.0, 100 * self.used_week / self.plan.weekly)
        usage = {"10080": UsageWindow(week, self.weekly_reset * 60, now * 60)}
        if self.window_5h_ends is not None:
            usage["300"] = UsageWindow(five, self.window_5h_ends * 60, now * 60)
        full = [w.resets_at for w in usage.values() if w.used_percent >= 100 and w.resets_at]
        state = AccountState(usage=usage, cooling_until=max(full) if full else None)
        auth = AccountAuth(LoginState.LOGGED_IN, access_token="sim")
        return AccountView(self.name, index == 0, Path("/nonexistent"), auth, state)


def accounts() -> list[SimAccount]:
    """A pro plan and three plus plans whose weeks reset at different times; the last one
    resets tonight with most of its quota unused (what `reset-first` is for)."""
    return [
        SimAccount("pro", PLANS["pro"], weekly_reset=5.5 * 1440, used_week=900),
        SimAccount("plus-1", PLANS["plus"], weekly_reset=1.6 * 1440, used_week=100),
        SimAccount("plus-2", PLANS["plus"], weekly_reset=3.4 * 1440, used_week=350),
        SimAccount("plus-3", PLANS["plus"], weekly_reset=0.9 * 1440, used_week=150),
    ]


def demand(minute: int, rng: random.Random) -> float:
    """Units of work the user wants this minute: a working week with evenings and a lighter
    weekend; bursts while Codex runs tools."""
    day, hour = divmod(minute // 60, 24)
    weekend = day >= 5
    if not weekend and 9 <= hour < 19:
        chance = 0.75
    elif not weekend and 20 <= hour < 23:
        chance = 0.35
    elif weekend and 10 <= hour < 16:
        chance = 0.4
    else:
        chance = 0.0
    return rng.choice((1.0, 1.0, 2.0, 4.0)) if rng.random() < chance else 0.0


@dataclass
class Outcome:
    blocked_minutes: int = 0
    served: float = 0.0
    wasted: float = 0.0
    reset_capacity: float = 0.0
    switches: int = 0
    cache_lost: int = 0
    per_account: dict[str, float] = field(default_factory=dict)


def simulate(strategy: Strategy, seed: int, switch_live: bool = False) -> Outcome:
    rng = random.Random(seed)
    pool = accounts()
    outcome = Outcome()
    current: str | None = None
    last_served: str | None = None
    conversation_left = 0
    for minute in range(WEEK):
        for account in pool:
            account.tick(minute)
        units = demand(minute, rng)
        if not units:
            continue
        if conversation_left <= 0:  # a new conversation: the strategy applies
            current, conversation_left = None, rng.randint(20, 90)
        conversation_left -= 1
        views = [a.view(minute, i) for i, a in enumerate(pool)]
        choice = choose_account(
            views, minute * 60, current, False, SWITCH_AT, strategy, switch_live
        )
        if choice.account is None:
            outcome.blocked_minutes += 1
            continue
        if current is not None and choice.account.name != current:
            outcome.cache_lost += 1
        if last_served is not None and choice.account.name != last_served:
            outcome.switches += 1
        current = last_served = choice.account.name
        chosen = next(a for a in pool if a.name == current)
        chosen.use(minute, units)
        outcome.served += units
    for account in pool:
        outcome.wasted += account.wasted
        outcome.reset_capacity += account.reset_capacity
        outcome.per_account[account.name] = account.used_week
    return outcome


def main() -> int:
    rows = []
    for switch_live in (False, True):
        for strategy in Strategy:
            runs = [simulate(strategy, seed, switch_live) for seed in SEEDS]
            blocked = sum(r.blocked_minutes for r in runs) / len(runs) / 60
            wasted = sum(r.wasted for r in runs) / sum(r.reset_capacity for r in runs) * 100
            served = sum(r.served for r in runs) / len(runs)
            switches = sum(r.switches for r in runs) / len(runs)
            lost = sum(r.cache_lost for r in runs) / len(runs)
            live = "leave at --switch-at" if switch_live else "stay until refused"
            rows.append((strategy.value, live, blocked, wasted, served, switches, lost))
    print(f"A week of Codex work over {len(accounts())} accounts (pro + 3 plus, weeks resetting "
          f"at different times), {len(SEEDS)} seeds, --switch-at {SWITCH_AT:g}:\n")  # fmt: skip
    print("| strategy | live conversations | blocked (h/week) | weekly quota expired unused "
          "| work served (units) | account switches | turns that lost their cache |")  # fmt: skip
    print("|---|---|---:|---:|---:|---:|---:|")
    for name, live, blocked, wasted, served, switches, lost in rows:
        print(f"| {name} | {live} | {blocked:.1f} | {wasted:.1f} % | {served:.0f} "
              f"| {switches:.0f} | {lost:.0f} |")  # fmt: skip
    defaults = [r for r in rows if r[1] == "stay until refused"]
    best = min(defaults, key=lambda r: (round(r[2], 1), r[3]))
    print(f"\nleast blocked, then least expired: {best[0]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
