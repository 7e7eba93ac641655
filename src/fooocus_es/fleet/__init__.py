"""Fleet mode: the event log, command queue and files on NATS JetStream (see README "Fleet")."""
