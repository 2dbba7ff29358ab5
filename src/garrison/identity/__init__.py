"""Device identity services: the fleet's trust material, factory batches, EST enrollment,
device authentication, revocation. They combine the pure cores (pki, factory, access) with
the store; the server and CLI are thin shells around them."""
