"""The web console (``intelbus web``): one agency's pages for the people who are not engineers.

A producer's console (CST) has the report form, the recipient preview and the publish outcome; a
force's console has the analyst's list, record page, timeline, map and links, and the operations
pages. Everything is served by the console itself: no script, style, font or tile is loaded from
outside the machine unless a deployment names its own tile server.
"""
