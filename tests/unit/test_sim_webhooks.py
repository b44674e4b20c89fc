"""The simulator's own webhook signing and encryption reproduce the spec's vectors."""

from __future__ import annotations

from engine.sim.webhooks import encrypt, sign

SECRET = "12345678abcdefgh"
PLAIN = '{"orderSn":"XXYYZZ","status":1}'
HEADERS = {
    "x-tm-app-key": "demo-test-app",
    "x-tm-event-code": "bg_test_event",
    "x-tm-timestamp": "1726127013525",
    "x-tm-ext-param": "{}",
}


def test_encryption_vector() -> None:
    assert encrypt(PLAIN, SECRET) == "sQmNTAKR2o4HrmCO3OchFgGyJU5Qta57+JQxxgVyVPU="


def test_both_signature_vectors() -> None:
    assert sign(SECRET, HEADERS, PLAIN, with_ext=True) == (
        "b5143d1a831453afbcf76d4621baa74a2dc07a486f26f5a956c6e50c61a338fb"
    )
    assert sign(SECRET, HEADERS, PLAIN, with_ext=False) == (
        "987875c01ea5c7f608502fb92e1de102c59e1c9195c010ab8a80bdb501a04fbc"
    )


def test_default_app_secrets_can_key_the_event_cipher() -> None:
    """Temu's app secrets are 40 hex characters and the AES key is their first 16 bytes: the
    simulator's default apps must be able to deliver events (and differ per app and seed)."""
    from engine.sim.config import SimConfig

    secrets = [a.app_secret for a in SimConfig.default(apps=3, seed=4).apps]
    assert all(len(s) == 40 and int(s, 16) >= 0 for s in secrets), secrets
    assert len(set(secrets)) == 3
    assert SimConfig.default(seed=5).apps[0].app_secret != secrets[0]
    assert SimConfig.default(apps=3, seed=4).apps[0].app_secret == secrets[0]
    encrypt(PLAIN, secrets[0])  # long enough for AES-128
