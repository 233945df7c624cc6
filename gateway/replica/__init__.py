"""The in-process replica an API process answers from: loaded feeds and realtime views."""
