#!/usr/bin/python
# Copyright: maqet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: maqet_vm
short_description: Define, start, pause, stop, restart and remove QEMU virtual machines
version_added: 0.1.0
description:
  - Converges one maqet virtual machine to a desired state. It is defined (V(present)),
    defined and running (V(running)), running with its vCPUs paused (V(paused)), defined
    and not running (V(stopped)), restarted (V(restarted)), or gone (V(absent)). One task
    creates and starts a VM.
  - The definition is the same mapping as a maqet YAML file, given inline as
    O(definition) or as a file with O(definition_file) (with both, O(definition) is
    merged over the file). maqet normalizes it (sizes, defaults, sorted tags), so a
    definition that means the same VM never reports a change. Numbers may be given as
    strings of digits, as a templated C(cpu) with C(-e n=2) or an INI inventory gives them.
  - Changing the definition of a running VM stores it and reports
    RV(restart_required); O(recreate=true) restarts the VM to apply it now. The same
    holds when a named network it runs on changed (M(maqet.vm.maqet_network)); NICs are
    never hot-plugged.
  - A disk may start from an image (C(image) and C(checksum) of a C(qcow2) storage
    entry). A start downloads it once into maqet's image cache on the hypervisor host and
    makes the disk an overlay on it; check mode only looks in the cache. A C(cloud_init)
    section becomes a NoCloud seed attached to the VM; changing it gives the guest a new
    instance-id, so cloud-init runs again after the restart. See docs/guests.md of maqet.
  - A failed download (404, checksum mismatch, no connection, disk full) fails the task
    in one line with the engine's C(error_type) and C(exit_code); the VM stays defined
    and not running, and nothing is left in the cache.
  - V(stopped) returns only after QEMU has exited (ACPI powerdown, then QMP quit, then
    SIGKILL after O(timeout)).
  - With O(wait), a V(running) or V(restarted) task also waits until the guest is ready,
    that is a regex on its serial console (O(wait.console)), its SSH server
    (O(wait.ssh)) and/or its guest agent (O(wait.agent)), counted from this boot. So
    one task creates, starts and waits for a guest that the next play can reach over
    SSH (the P(maqet.vm.maqet#inventory) inventory gives the connection variables, host
    key checking on) or through its agent.
  - A forward's host port may be C(auto) (C(host) V(auto), C(guest) V(22)); QEMU binds
    a free port at each start, and RV(vm.ports) and RV(vm.ssh) give the real one.
  - When a task fails after it already changed something (the definition was stored,
    then QEMU would not start), it fails with C(changed=true) and the RV(actions) done.
author:
  - maqet developers (@maqet)
extends_documentation_fragment:
  - maqet.vm.common
  - maqet.vm.attributes
attributes:
  check_mode:
    support: full
    details: Computes the same actions and diff as a real run, without side effects.
  diff_mode:
    support: full
    details: Shows the run status and the normalized definition before and after.
  idempotent:
    support: full
    details: Except O(state=restarted), which restarts the VM every time.
options:
  name:
    description:
      - Name of the VM. Overrides C(name) of O(definition) and O(definition_file).
      - Enough on its own for every state but the first V(present) or V(running).
    type: str
  definition:
    description:
      - The VM definition, as in a maqet YAML file (see docs/configuration.md of maqet).
      - Relative paths in it resolve against the working directory of the module
        (give absolute paths, for example with C(playbook_dir)).
    type: dict
    aliases:
      - config
  definition_file:
    description:
      - Path of a maqet YAML definition on the hypervisor host. Relative paths inside
        it resolve against its directory.
    type: path
    aliases:
      - config_file
  state:
    description:
      - V(present) defines (or redefines) the VM and leaves its run status alone.
      - V(running) defines it and makes sure it runs; a paused VM is resumed.
      - V(paused) makes sure it runs with its vCPUs paused (starting it first).
      - V(stopped) makes sure it does not run (graceful powerdown first).
      - V(restarted) stops it (when it runs) and starts it, every time.
      - V(absent) stops it when it runs (as V(stopped) does) and removes its definition.
    type: str
    default: present
    choices:
      - present
      - running
      - paused
      - stopped
      - restarted
      - absent
  recreate:
    description:
      - When the definition of a running VM changed, restart it now so that the new
        definition takes effect. Without it the task reports RV(restart_required).
    type: bool
    default: false
  timeout:
    description:
      - Seconds to wait for the guest to power off after an ACPI powerdown before QMP
        C(quit) and then SIGKILL are used.
    type: float
    default: 30
  force:
    description:
      - When stopping (V(stopped), V(restarted), V(absent), O(recreate)), do not wait
        for the guest, send QMP C(quit) at once, then SIGKILL. The same meaning as
        C(maqet stop --force) and C(maqet rm --force).
    type: bool
    default: false
  purge:
    description:
      - With O(state=absent), also delete the VM's directory (disks maqet created,
        logs). Without it those files are kept.
    type: bool
    default: false
  wait:
    description:
      - After O(state=running) or O(state=restarted), wait until the guest is ready,
        counting from the start of this boot. Conditions are checked in this order,
        O(wait.console), O(wait.ssh), then O(wait.agent), all within O(wait.timeout). Not
        waited for in check mode.
      - Waiting never changes anything (a running VM that is ready returns at once), so
        a re-run stays C(changed=false).
      - A wait that fails after the task started the VM fails with C(changed=true) and
        the RV(actions) done.
    type: dict
    suboptions:
      ssh:
        description:
          - Wait until the guest's SSH server answers (its C(SSH-) banner, read through
            the VM's user-net forward to the guest's SSH port, C(ssh.port) of the
            definition, default 22) and, for a VM with C(cloud_init) at its first boot
            (or with a new instance), until maqet wrote the host keys the guest printed
            on its console into the VM's known_hosts (RV(vm.known_hosts)).
          - The VM needs such a forward; one with C(host) V(auto) is enough.
        type: bool
        default: false
      agent:
        description:
          - Wait until the guest agent (qemu-ga in the guest) answers on the VM's agent
            channel (C(agent) V(true) in the definition), for example before tasks through
            the P(maqet.vm.agent#connection) connection. A reboot of the guest meanwhile
            is waited out.
          - A VM that runs without the channel fails at once.
        type: bool
        default: false
      console:
        description: A regular expression to wait for on the serial console (matched
          line by line, terminal escapes removed).
        type: str
      timeout:
        description: Seconds to wait for all conditions together.
        type: float
        default: 300
seealso:
  - module: maqet.vm.maqet_vm_info
  - module: maqet.vm.maqet_qmp
  - plugin: maqet.vm.maqet
    plugin_type: inventory
"""

EXAMPLES = r"""
- name: Define and start a VM in one task
  maqet.vm.maqet_vm:
    state: running
    definition:
      name: web1
      accel: tcg
      memory: 1G
      cpu: 2
      storage:
        - {name: root, type: qcow2, size: 10G}
      network:
        - type: user
          forward:
            - {host: 2222, guest: 22}
      tags: [web]

- name: A VM from a cloud image, with a user and key made by cloud-init
  maqet.vm.maqet_vm:
    state: running
    definition:
      name: app1
      machine: q35
      memory: 1G
      storage:
        - name: root
          type: qcow2
          image: https://images.example.org/debian-12-genericcloud-amd64.qcow2
          checksum: sha256:https://images.example.org/SHA256SUMS
          size: 20G
      cloud_init:
        users:
          - name: admin
            ssh_authorized_keys: ["{{ lookup('ansible.builtin.file', '~/.ssh/id_ed25519.pub') }}"]
            sudo: true
      network:
        - type: user
          forward:
            - {host: 2223, guest: 22}

- name: Create, start and wait until the guest can be reached over SSH
  maqet.vm.maqet_vm:
    state: running
    definition:
      name: app2
      memory: 1G
      storage:
        - {name: root, type: qcow2, image: /srv/images/debian-12.qcow2, size: 10G}
      cloud_init:
        users:
          - name: admin
            ssh_authorized_keys: ["{{ lookup('ansible.builtin.file', '~/.ssh/id_ed25519.pub') }}"]
      ssh: {private_key: ~/.ssh/id_ed25519}
      network:
        - type: user
          forward:
            - {host: auto, guest: 22}    # a free port, at each start
      tags: [app]
    wait:
      ssh: true
  register: app2
# then: ansible.builtin.meta: refresh_inventory, and a play on group maqet_tag_app

- name: Same VM from a definition file, applying a changed definition at once
  maqet.vm.maqet_vm:
    definition_file: /srv/vms/web1.yml
    state: running
    recreate: true

- name: Freeze its vCPUs (starting it first if needed)
  maqet.vm.maqet_vm:
    name: web1
    state: paused

- name: Stop it (returns after QEMU exited)
  maqet.vm.maqet_vm:
    name: web1
    state: stopped
    timeout: 60

- name: Remove it without waiting for the guest, and delete the disks maqet created
  maqet.vm.maqet_vm:
    name: web1
    state: absent
    force: true
    purge: true

- name: Use another maqet installation for a whole block
  module_defaults:
    group/maqet.vm.maqet:
      maqet_home: /srv/maqet
  block:
    - maqet.vm.maqet_vm:
        name: web1
        state: restarted
"""

RETURN = r"""
name:
  description: Name of the VM.
  returned: always
  type: str
  sample: web1
state:
  description: The state that was asked for.
  returned: always
  type: str
  sample: running
actions:
  description:
    - What was done, in order (in check mode, what would be done). Each is a stable
      verb in C(action) with details; the details only a real run can measure
      (C(rung), C(seconds), C(status), C(reason) of a stop) are absent in check mode.
    - "Verbs: C(define), C(redefine), C(fetch_image) (C(location), C(digest), C(size):
      an image downloaded or copied into the cache), C(create_disk) (C(storage),
      C(path), C(size), C(backing); C(image) for an overlay on a cached image),
      C(write_seed) (C(path), C(instance_id): the cloud-init seed), C(start), C(adopt)
      (a new runner took over a live QEMU), C(pause), C(resume), C(stop) (C(force),
      C(timeout); then C(rung): C(powerdown), C(quit) or C(kill), C(seconds), C(status),
      C(reason)), C(remove), C(delete_file) (C(path))."
  returned: always
  type: list
  elements: dict
  sample:
    - {action: define}
    - {action: create_disk, storage: root, path: /var/lib/maqet/vms/web1/root.qcow2,
       size: 10737418240, backing: null}
    - {action: start}
restart_required:
  description:
    - The VM runs with another definition than the stored one; restart it (or use
      O(recreate=true)) to apply the stored one.
  returned: always
  type: bool
  sample: false
vm:
  description:
    - The VM after the task, or V(null) when it does not exist (also in check mode
      before its first creation). The same view as M(maqet.vm.maqet_vm_info) returns.
  returned: always
  type: dict
  contains:
    name:
      description: Name of the VM.
      type: str
      sample: web1
    id:
      description: maqet's number for the VM (never reused; names its runtime directory).
      type: int
      sample: 3
    status:
      description:
        - Observed run status. C(defined), C(starting), C(running), C(paused),
          C(stopping), C(stopped) or C(crashed).
        - Read from the store, the runner's lock and QEMU's process identity, so a VM
          whose runner and QEMU died shows C(crashed) even before anything recorded it.
      type: str
      sample: running
    recorded_status:
      description: The status the store records (differs from RV(vm.status) until the
        next change records what was found).
      type: str
      sample: running
    status_reason:
      description: Why the status is what it is (the last exit, or what was found).
      type: str
    runner_alive:
      description: The VM's runner process holds its lock.
      type: bool
    qemu_alive:
      description: The QEMU process maqet recorded is alive (same PID and start time).
      type: bool
    spec:
      description: The normalized definition.
      type: dict
    spec_hash:
      description: Hash of the normalized definition.
      type: str
    restart_required:
      description: QEMU runs with another definition than the stored one.
      type: bool
    tags:
      description: Tags of the definition.
      type: list
      elements: str
    runner_pid:
      description: PID of the VM's runner process, while it runs.
      type: int
    qemu_pid:
      description: PID of QEMU, while it runs.
      type: int
    accel:
      description: Accelerator QEMU uses (V(kvm) or V(tcg)), while it runs.
      type: str
    created_at:
      description: When the VM was defined (seconds since the epoch).
      type: float
    updated_at:
      description: When its record last changed (seconds since the epoch).
      type: float
    started_at:
      description: When QEMU was last started (seconds since the epoch).
      type: float
    stopped_at:
      description: When QEMU last exited (seconds since the epoch).
      type: float
    last_exit:
      description: How QEMU last ended, for example C(exit code 0, shutdown reason
        guest-shutdown) or C(QEMU killed by SIGKILL).
      type: str
    ports:
      description:
        - Forwarded ports of user-mode networks (C(host), C(guest), C(host_address),
          C(protocol), C(auto)).
        - For a forward whose host port is C(auto) (C(auto=true)), C(host) is the port
          QEMU bound in this run, or V(null) while the VM does not run.
      type: list
      elements: dict
    networks:
      description:
        - Every NIC, in order, with C(nic) (its position), C(netdev), C(type) (the NIC's
          type, V(network) for a named network), C(model), C(mac) (V(null) when QEMU
          picks it), and for named networks C(network), C(network_type) (V(segment),
          V(link), V(bridged)), C(end) (links) and C(tap) (bridged, the host's tap
          device while the VM runs).
        - The MAC of a NIC on a named network is derived from the VM's name and the NIC's
          position unless the definition gives one, so it is the same on every start.
      type: list
      elements: dict
      sample:
        - {nic: 0, type: user, network: null, mac: null}
        - {nic: 1, type: network, network: lab, network_type: segment,
           mac: "52:54:00:ca:84:2e"}
    networks_changed:
      description: Named networks whose definition changed since the running QEMU
        started on them (then RV(vm.restart_required) is true).
      type: list
      elements: str
    known_hosts:
      description:
        - The VM's known_hosts file (on the hypervisor host), written by maqet from the
          host keys the guest printed on its serial console (cloud-init does), naming the
          guest by each forward to its SSH port (C([127.0.0.1]:PORT)) and by
          RV(vm.ssh.host_key_alias). V(null) while the guest has printed none.
        - Use it with C(-o UserKnownHostsFile=... -o StrictHostKeyChecking=yes).
      type: str
    ssh:
      description: How to reach the guest over SSH (the definition's C(ssh) section, and
        its forward now).
      type: dict
      contains:
        user:
          description: C(ssh.user), else the first C(cloud_init) user.
          type: str
        private_key:
          description: C(ssh.private_key) as written.
          type: str
        guest_port:
          description: The guest's SSH port.
          type: int
        host:
          description: Where to connect (C(127.0.0.1) for a forward on every interface).
          type: str
        host_address:
          description: The address the forward listens on.
          type: str
        port:
          description: The host port (the real one of an C(auto) forward; V(null) when
            there is none, or the VM does not run).
          type: int
        host_keys:
          description: The guest's host keys in RV(vm.known_hosts) (C(TYPE BASE64)).
          type: list
          elements: str
        host_key_alias:
          description:
            - The name RV(vm.known_hosts) holds the guest's keys under whatever address
              reaches it (C(maqet-vm-NAME)), for C(ssh -o HostKeyAlias=...) when the guest
              is reached at an address of its own (a C(bridged) or C(tap) network).
              V(null) while the file holds no keys.
          type: str
    paths:
      description: The VM's directory and its logs (C(dir), C(runner_log), C(qemu_log),
        C(serial_log)).
      type: dict
    argv:
      description:
        - QEMU's command line for the stored definition, exactly as the runner launches
          it, except that C(QMP_FD) (and C(AGENT_FD) for a VM with a guest agent channel)
          stand for the numbers of those sockets' file descriptors (QEMU inherits them
          from the runner).
      type: list
      elements: str
  sample:
    name: web1
    status: running
    tags: [web]
    accel: tcg
wait:
  description: What O(wait) found, one key per condition.
  returned: when O(wait) asked for something (not in check mode)
  type: dict
  contains:
    console:
      description: C(match) (the matching text) and C(offset) (the console offset after it).
      type: dict
    ssh:
      description: C(host) and C(port) where the guest's SSH server answered, C(banner),
        C(user), C(known_hosts), C(host_keys).
      type: dict
    agent:
      description: C(version), the guest agent's.
      type: dict
  sample:
    ssh: {host: 127.0.0.1, port: 40022, banner: SSH-2.0-OpenSSH_9.2p1 Debian-2,
          user: admin, known_hosts: /var/lib/maqet/vms/app2/known_hosts}
diff:
  description:
    - Run status and normalized definition before and after (diff mode only), as
      C({status, spec}); an absent VM is an empty mapping.
  returned: when diff mode is on
  type: dict
  sample:
    before: {status: running, spec: {name: web1, memory: 1073741824}}
    after: {status: stopped, spec: {name: web1, memory: 1073741824}}
op_id:
  description:
    - The operation id of this task (O(op_id), or the one made for it). C(maqet events
      --op ID) on the hypervisor host shows what the task caused. Also returned when
      the task fails.
  returned: always
  type: str
  sample: 3f2a9c1b0d4e
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.maqet.vm.plugins.module_utils._vm import (
    VM_ARGUMENT_SPEC,
    VM_REQUIRED_ONE_OF,
    run_vm,
)


def main():
    module = AnsibleModule(
        argument_spec=VM_ARGUMENT_SPEC,
        required_one_of=VM_REQUIRED_ONE_OF,
        supports_check_mode=True,
    )
    run_vm(module)


if __name__ == "__main__":
    main()
