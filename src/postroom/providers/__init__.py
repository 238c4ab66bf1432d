"""The provider seam: hand rendered mail to an ESP or MTA and report per-recipient results."""
