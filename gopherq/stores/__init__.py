"""Connections to the storage engines, shared by every component that keeps state there.

The broker, the result backend, the event log and the schedule store of one
engine keep their data in the same place: one SQLite file, or one Redis
(cluster). What they share lives here, below all of them (``brokers/``,
``results/``, ``events/`` and ``schedules/`` import it; it imports none of them):

* ``stores.sqlite``: the SQLite file: ``Database`` (connections per process and
  thread, transactions, errors), ``ChangeWaiter`` (sleep until a commit),
  ``sqlite_path`` (the file a URL names); ``stores.sqlite_guard`` checks the
  file's mode and path before it is opened.
* ``stores.redis``: Redis URLs, per-process clients, the Lua scripts (kept in
  ``gopherq/brokers/redis/scripts/``, loaded and run by ``Connection``), errors
  and retries.
"""
