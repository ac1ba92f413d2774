"""The engine releases a bisect searches: PEP 440 order, pre-releases only
when asked, the range from --good to --bad (or --versions), and the pair a
failing check's verdict names (the golden's release, the run's)."""
from __future__ import annotations

import argparse
import re

from gate.core.errors import BadInput
from gate.core.rows import Verdict
from gate.run import envs

__all__ = ["order_releases", "release_range", "release_pair"]


def order_releases(versions: list[str], pre: bool) -> list[str]:
    from packaging.version import InvalidVersion, Version
    parsed = []
    for v in versions:
        try:
            pv = Version(v)
        except InvalidVersion:
            raise BadInput(f"release {v!r} is not a PEP 440 version", "e.g. --versions 0.30.0,0.31.0") from None
        if pv.is_prerelease and not pre:
            continue
        parsed.append((pv, v))
    return [v for _, v in sorted(set(parsed))]


def release_range(args: argparse.Namespace, package: str) -> list[str]:
    from packaging.version import InvalidVersion, Version
    if args.versions:
        listed = order_releases([v.strip() for v in args.versions.split(",") if v.strip()], pre=True)
        if len(listed) < 2:
            raise BadInput(f"--versions {args.versions!r}: name at least two releases", "e.g. --versions 0.31.0,0.32.0")
        good = args.good or listed[0]
        bad = args.bad or listed[-1]
        source = " among --versions"
    else:
        if not (args.good and args.bad):
            raise BadInput("bisect needs --good and --bad (or --versions A,B,C)",
                           "e.g. --good 0.30.0 --bad 0.32.0")
        listed = order_releases(envs.list_releases(package), args.pre)
        good, bad = args.good, args.bad
        source = " on the package index"
    for name, v in (("--good", good), ("--bad", bad)):
        try:
            Version(v)
        except InvalidVersion:
            raise BadInput(f"{name} {v!r} is not a PEP 440 version", "e.g. --good 0.30.0 --bad 0.32.0") from None
    if Version(good) >= Version(bad):
        raise BadInput(f"--good {good} is not older than --bad {bad}", "swap them: --good is the older release")
    for name, v in (("--good", good), ("--bad", bad)):
        if v not in listed:
            raise BadInput(f"{name} {v}: {package} has no such release{source} (have: {', '.join(listed[-8:])})",
                           "pick a listed release, or name them with --versions")
    return [v for v in listed if Version(good) <= Version(v) <= Version(bad)]


_PLAIN_RELEASE = re.compile(r"[0-9][0-9A-Za-z.+!_-]{0,40}")


def _manifest_release(verdict: Verdict, side: str) -> str | None:
    manifest = (verdict.get(side) or {}).get("manifest") or {}
    value = (manifest.get("environment") or {}).get("vllm_version") or manifest.get("vllm_version")
    return value if isinstance(value, str) else None


def release_pair(verdict: Verdict) -> tuple[str | None, str | None, str]:
    """(the golden's release, the run's release, why a release bisect cannot
    run or ""), from a verdict's manifests. A release is returned only when
    it is a plain PEP 440 version: the manifests come from the run's side."""
    from packaging.version import InvalidVersion, Version
    found: dict[str, str | None] = {}
    for side, what in (("reference", "the golden"), ("candidate", "the release under test")):
        value = _manifest_release(verdict, side)
        try:
            found[side] = value if value and _PLAIN_RELEASE.fullmatch(value) and Version(value) else None
        except InvalidVersion:
            found[side] = None
    good, bad = found["reference"], found["candidate"]
    if good is None or bad is None:
        side = "the golden" if good is None else "the release under test"
        return good, bad, f"{side} names no engine release (a PEP 440 version) in its manifest"
    if Version(good) == Version(bad):
        return good, bad, (f"the golden and the check both ran on {bad}, so no release moved; the drift comes "
                           "from the engine args, the model or the hardware")
    if Version(good) > Version(bad):
        return good, bad, f"the release under test {bad} is older than the golden's {good}"
    return good, bad, ""
