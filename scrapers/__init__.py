"""The Scrapy project: webshops into rows of `scraped_bikes`.

Spiders only navigate (`spiders/`); one product page is read by
`extract.extract_product`, which tests can call on a saved HTML file alone.
"""
