-- keycard schema v6 (PostgreSQL): RFC 8705 client authentication. Keep in step with
-- sqlite/0006_mtls.sql. A `tls_client_auth` client names the subject DN (RFC 4514) of
-- its certificate, which must chain to the client CA; a `self_signed_tls_client_auth`
-- client (or a `tls_client_auth` one pinned to a certificate) registers the SHA-256
-- fingerprint of its certificate. Certificate bindings (`keycard cert add`) are
-- credentials of kind 'cert' and need no new column.
ALTER TABLE oauth_clients ADD COLUMN tls_subject_dn TEXT;
ALTER TABLE oauth_clients ADD COLUMN cert_fingerprint TEXT;
