# Sourced by bench.sh and compare.sh: the target config both benchmark with.
# bench_config PORT BACKEND IDLE NQN prints it: one reactor on core 0, a
# 1 GiB namespace of 512-byte blocks on 127.0.0.1:PORT, open to any host.
bench_config() {
  cat <<TOML
[target]
cores = [0]
idle = "$3"
max_queue_depth = 128
[[listener]]
transport = "tcp"
address = "127.0.0.1"
port = $1
[[subsystem]]
nqn = "$4"
allow_any_host = true
[[subsystem.namespace]]
backend = "$2"
size = "1GiB"
block_size = 512
TOML
}
