"""What a scrape raises to its caller, in a module that imports nothing heavy: the
application layer catches it without loading Scrapy."""

from __future__ import annotations


class CrawlError(RuntimeError):
    """A shop's crawl could not run (its spider failed to start or crashed)."""
