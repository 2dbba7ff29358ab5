"""The device agent: enrollment, the mTLS channel, automatic renewal."""
