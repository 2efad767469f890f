-- keycard schema v7: the algorithm of an RFC 9421 key. NULL: hmac-sha256 (`sealed` holds
-- the sealed shared secret); 'ed25519': `sealed` holds the registered 32-byte public key
-- (not a secret: it is stored as it is). Keep in step with the other engine's 0007.
ALTER TABLE credentials ADD COLUMN alg TEXT;
