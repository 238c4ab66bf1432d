"""Deliverability toolkit: DNS records, DKIM signing and content checks."""
