"""The device agent (issue 13): its explicit state table (:mod:`.table`) and
the machine that runs it with bounded, jittered retries (:mod:`.machine`)."""
