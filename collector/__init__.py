"""The event collector: Segment's HTTP tracking API, writing accepted events durably to the landing folder.

Websites and apps send events with any Segment SDK pointed at the collector (`host=`); the collector
checks them, stamps them and appends them to one JSON-lines file per source, published into the landing
folder by atomic rename, where the landing sensor and the `format: segment` sources pick them up.
It is a separate process from Dagster and never opens the warehouse.
"""
