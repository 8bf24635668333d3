"""Generated CRI v1 stubs (`make proto` from api.proto, cri-api v0.26.1 with gogoproto's options removed)."""
