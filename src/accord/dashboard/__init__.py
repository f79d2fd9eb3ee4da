"""``fx dashboard``: a read-only web page of a running federation, served next to the aggregator."""
