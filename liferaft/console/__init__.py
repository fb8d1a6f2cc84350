"""The web console of a liferaft-kv node (issue 17; docs/console.md): the
static page at ``/ui/``, the live view of the cluster at
``/v1/console/stream`` (gathered through the peer RPC), and its timeline
and rates.  A front end of ``liferaft serve`` (front.py), between kv and
cli in the layers (docs/architecture.md)."""
