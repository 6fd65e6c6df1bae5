"""The CLI's exit codes (DESIGN §7), in one place and free of heavy imports."""

EXIT_READY = 0  # --once: all Ready; also plain success
EXIT_NOT_READY = 1  # --once: something not Ready; validate: invalid; wait: timeout or Failed
EXIT_USAGE = 2  # usage or node-config error
EXIT_REJECTED = 3  # the state repo's revision was rejected
