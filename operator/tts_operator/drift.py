"""Whether a live child already is what the operator would apply, so the apply can be skipped.

Each applied child carries `ttsoperator.io/applied-hash`, a hash of the manifest the operator
applied. A child is up to date when that hash is the desired manifest's AND every field of the
desired manifest is in the live object with the same value (a subset: the API server adds
defaults, status and other managers' fields, but never changes ours). Either test alone
falls short:

- the hash alone misses a hand edit of one of our fields (the annotation stays);
- the subset alone misses a field the spec stopped asking for: the live object still has
  it, and only an apply (server-side apply drops fields their manager stops sending)
  removes it. A removed field changes the hash.

When unsure (a quantity the API server rewrote, "1000m" read back as "1"), the child counts
as changed: a redundant apply is safe, a skipped one is not.
"""

from __future__ import annotations

from typing import Any

from tts_operator.builders.common import content_hash
from tts_operator.kinds import Manifest

APPLIED_HASH = "ttsoperator.io/applied-hash"


def manifest_hash(manifest: Manifest) -> str:
    """The hash of a manifest as built (its own applied-hash annotation left out)."""
    meta = dict(manifest.get("metadata") or {})
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if k != APPLIED_HASH}
    if annotations:
        meta["annotations"] = annotations
    else:
        meta.pop("annotations", None)
    return content_hash({**manifest, "metadata": meta})


def stamp(manifest: Manifest) -> Manifest:
    """Put the manifest's hash on it (in place) and return it."""
    meta = manifest.setdefault("metadata", {})
    digest = manifest_hash(manifest)
    meta["annotations"] = {**(meta.get("annotations") or {}), APPLIED_HASH: digest}
    return manifest


def applied_hash(obj: Manifest | None) -> str | None:
    return ((obj or {}).get("metadata", {}).get("annotations") or {}).get(APPLIED_HASH)


def contains(live: Any, want: Any) -> bool:
    """Every field of `want` is in `live` with the same value. Lists must have the same
    length and match item by item (an item added by hand means: apply)."""
    if isinstance(want, dict):
        return isinstance(live, dict) and all(
            k in live and contains(live[k], v) for k, v in want.items()
        )
    if isinstance(want, list):
        return (
            isinstance(live, list)
            and len(live) == len(want)
            and all(contains(a, b) for a, b in zip(live, want, strict=True))
        )
    # bool is an int in Python: True must not pass for 1.
    return type(live) is type(want) and live == want


def up_to_date(desired: Manifest, live: Manifest | None) -> bool:
    """Whether applying the stamped `desired` over `live` would change nothing of ours."""
    return (
        live is not None
        and applied_hash(live) is not None
        and applied_hash(live) == applied_hash(desired)
        and contains(live, desired)
    )
