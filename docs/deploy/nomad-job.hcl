# One campaign run sent by a Nomad batch job: 16 allocations of one group, each sending the
# shard of its NOMAD_ALLOC_INDEX (0 to 15), restarted in place and then rescheduled elsewhere
# while its shard has work left.
#
#   nomad var put nomad/jobs/campaign-spring smtp_password=@smtp-password unsubscribe_secret=@unsubscribe-secret
#   nomad job run nomad-job.hcl
#   nomad job status campaign-spring
# Then, once every allocation has finished, the whole run's report, from any client that
# mounts the run directory:  campaign report /srv/campaign/runs/spring
# A shard that exited 0 can still have unknown donors, left by an allocation that was killed:
# the run's unknown.csv lists them all.
#
# Exit codes of `campaign send`: 0 shard done; 5 work left (deferred, daily cap,
# interrupted) and 7 a lock held (the same shard still running, another shard count, a plain
# send) want a retry later; 137 killed (retry; at most one unknown donor per connection, or
# one batch of 32 per connection when the client itself died). Nomad's restart and
# reschedule blocks treat every non-zero exit alike, so 2 (configuration refused), 6 (halted:
# the relay refused the sender; the halt marker RUN/ledger/halt stops every shard, clear it
# with --clear-halt after the fix) and 8 (finished with unknown outcomes) are retried too.
# That costs nothing and mails nobody twice: 2 and 6 stop again at once, 8 never resends an
# unknown donor. `nomad alloc status` shows each allocation's exit codes.
#
# Every allocation runs at once when the cluster has room: Nomad has no "4 at a time" for a
# batch group. Give each the provider's limit / 16 with --rate, or fewer allocations (the
# count, and the shard count in args, together) on a small cluster.

job "campaign-spring" {
  type        = "batch"
  datacenters = ["dc1"]

  group "send" {
    # One allocation per shard; NOMAD_ALLOC_INDEX is 0 to count - 1, and a rescheduled
    # allocation keeps its index. Change 16 here and in args together.
    count = 16

    # In place first: the same client, a minute apart (deferred donors wait for their retry),
    # then the allocation fails and reschedule takes over.
    restart {
      attempts = 3
      interval = "30m"
      delay    = "60s"
      mode     = "fail"
    }

    # On another client (the old one may be lost), with a growing delay. A client that is lost
    # while its allocation sends may still send for a while: the new one waits for the
    # shard's lock (--lock-wait), or exits 7 and is tried again.
    reschedule {
      attempts       = 5
      interval       = "6h"
      delay          = "2m"
      delay_function = "exponential"
      max_delay      = "30m"
      unlimited      = false
    }

    # The run directory, on every client at the same path: a host volume on an NFSv4 or
    # CephFS mount (client config: host_volume "campaign-runs" { path = "/mnt/campaign-runs" }),
    # or a CSI volume of an NFS or CephFS plugin:
    #   type = "csi", source = "campaign-runs", access_mode = "multi-node-multi-writer",
    #   attachment_mode = "file-system"
    # Its flock locks must reach every client (storage.md); campaign checks the mount.
    volume "runs" {
      type      = "host"
      source    = "campaign-runs"
      read_only = false
    }

    task "send" {
      driver = "docker"

      config {
        # ENTRYPOINT is campaign; Nomad fills in ${NOMAD_ALLOC_INDEX} itself (no shell: the
        # signals go to campaign and its exit code is the task's).
        image = "registry.example.org/campaign:0.1.0"
        args = [
          "send", "/srv/campaign/runs/spring",
          "--shard", "${NOMAD_ALLOC_INDEX}/16",
          "--lock-wait", "60s",
          "--rate", "2/s",
        ]
      }

      volume_mount {
        volume      = "runs"
        destination = "/srv/campaign/runs"
      }

      # Secrets from Nomad variables (nomad var put, above), rendered into the task's secrets
      # directory, which only this task can read. The password goes in the environment
      # (env = true); the unsubscribe secret stays a file, mode 600 as campaign requires and
      # owned by the image's user (10001), who could not read it otherwise.
      # From Vault instead: a vault { role = "campaign" } block in this task and
      # {{ with secret "kv/data/campaign/spring" }}{{ .Data.data.smtp_password }}{{ end }}.
      template {
        destination = "${NOMAD_SECRETS_DIR}/smtp.env"
        env         = true
        change_mode = "noop"
        data        = <<-EOT
          {{ with nomadVar "nomad/jobs/campaign-spring" }}CAMPAIGN_SMTP_PASSWORD={{ .smtp_password }}{{ end }}
        EOT
      }

      template {
        destination = "${NOMAD_SECRETS_DIR}/unsubscribe-secret"
        perms       = "600"
        uid         = 10001
        gid         = 10001
        change_mode = "noop"
        data        = <<-EOT
          {{ with nomadVar "nomad/jobs/campaign-spring" }}{{ .unsubscribe_secret }}{{ end }}
        EOT
      }

      env {
        CAMPAIGN_SMTP_URL                = "smtp+starttls://relay.example.org:587"
        CAMPAIGN_UNSUBSCRIBE_SECRET_FILE = "${NOMAD_SECRETS_DIR}/unsubscribe-secret"
      }

      # Stopping (nomad job stop, a drained client): SIGTERM, and four minutes for campaign
      # to finish the messages in flight (three replies of [smtp] timeout_seconds each, 60 s
      # by default) before SIGKILL. Nomad clients cap it at their max_kill_timeout (client
      # config, 30s by default): raise that to 4m on the clients that send.
      kill_signal  = "SIGTERM"
      kill_timeout = "4m"

      resources {
        cpu    = 250
        memory = 256
      }
    }
  }
}
