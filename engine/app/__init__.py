"""Assembly: builds the runtime and the reconciler from settings (used by daemon and cli)."""
