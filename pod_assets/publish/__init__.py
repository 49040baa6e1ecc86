"""What listeners get: subtitles and chapters on the final timeline, the feed, the show
statistics, and the publish/unpublish rules and jobs.

The package exports nothing itself (:mod:`pod_assets.status` imports
:mod:`pod_assets.publish.publishing` while the assets here import the status module);
:mod:`pod_assets` assembles the definitions.
"""
