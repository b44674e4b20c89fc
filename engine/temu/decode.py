"""Decoding Temu's answers: the rules live in engine/jsonvalue.py (a root leaf, so the store
reads payloads back by the same rules)."""

from __future__ import annotations

from engine.jsonvalue import DecodeResult, decode_body

__all__ = ["DecodeResult", "decode_body"]
