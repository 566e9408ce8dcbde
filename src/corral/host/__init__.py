"""The host side: start workers, talk to them, supervise them."""
