"""Who may call and how often: API keys, tiers, hackathon events, signup, the rate limiter."""
