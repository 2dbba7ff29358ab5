"""Fleet PKI: certificate authorities, the device certificate profile, CSR checks,
CRL and OCSP. Pure functions: keys, data and the current time go in; certificates,
revocation data or a specific exception come out. Nothing here touches disk or network."""
