"""Scrapy settings: polite by default, observable, declarative.

bikematch's own settings (the database, the contact address, the HTTP cache) reach a
crawl through `scrapers.run.run_shops`, which sets them over these.
"""

from bikematch.core.settings import DEFAULT_CONTACT

BOT_NAME = "bikematch"
SPIDER_MODULES = ["scrapers.spiders"]
NEWSPIDER_MODULE = "scrapers.spiders"

# Identify ourselves, with a way to reach the operator (the BIKEMATCH_CONTACT setting).
USER_AGENT = f"bikematch/0.1 (+{DEFAULT_CONTACT})"

ROBOTSTXT_OBEY = True
AUTOTHROTTLE_ENABLED = True
AUTOTHROTTLE_START_DELAY = 0.5
AUTOTHROTTLE_TARGET_CONCURRENCY = 2.0
CONCURRENT_REQUESTS = 32
CONCURRENT_REQUESTS_PER_DOMAIN = 4
DOWNLOAD_DELAY = 0.5
DOWNLOAD_TIMEOUT = 30
# Scrapy's default lets one response take 1 GiB of memory. A product page, a page of
# products.json or a sitemap (50 MB at most by its protocol) fits well within this.
DOWNLOAD_MAXSIZE = 64 * 2**20
RETRY_TIMES = 2
REDIRECT_MAX_TIMES = 5
COOKIES_ENABLED = False
TELNETCONSOLE_ENABLED = False

# Development: BIKEMATCH_HTTPCACHE=1 replays pages from .scrapy/httpcache.
HTTPCACHE_ENABLED = False
HTTPCACHE_EXPIRATION_SECS = 24 * 3600

ITEM_PIPELINES = {"scrapers.pipelines.ListingPipeline": 300}
#: Listings per database write.
BIKEMATCH_BATCH_SIZE = 200
#: Path of the shops configuration, for `scrapy crawl SPIDER -a shop=NAME`; None: the
#: settings' (BIKEMATCH_SHOPS, else shops.yaml).
BIKEMATCH_SHOPS = None
#: The database listings go to; None: the settings' (DATABASE_URL, else the embedded one).
BIKEMATCH_DATABASE_URL = None

LOG_LEVEL = "INFO"
LOGSTATS_INTERVAL = 15
REQUEST_FINGERPRINTER_IMPLEMENTATION = "2.7"
TWISTED_REACTOR = "twisted.internet.asyncioreactor.AsyncioSelectorReactor"
FEED_EXPORT_ENCODING = "utf-8"
