"""Spiders, one per shop platform: they only navigate; pages are read in scrapers.extract."""
