"""sr_core.publication: what makes a destination trustworthy.

The run's work directory, its lock and the per-tile journal that resume reads
(:mod:`.journal`); the publication claim that lets one run at a time write a destination
(:mod:`.claim`); the manifest written last, the only file consumers should trust
(:mod:`.manifest`). Their conditional writes and versioned reads go through the storage
contract (:meth:`sr_core.storage.Store.put` with ``if_none_match`` / ``if_match``,
:meth:`sr_core.storage.Store.read`), never through boto3. May import: ``sr_core.errors`` and
``sr_core.storage`` only.
"""
