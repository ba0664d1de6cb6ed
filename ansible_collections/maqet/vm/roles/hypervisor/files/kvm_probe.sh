#!/bin/sh
# Can this host run VMs with KVM? Prints one JSON object: kvm (true/false), the CPU's
# virtualization flag (vmx, svm or null), and the reason in words. KVM needs all three:
# the CPU's extensions (a VM offers them only with nested virtualization), the vendor's
# kvm module, and a /dev/kvm this user can open read-write. The paths can be moved for
# tests: MAQET_PROBE_CPUINFO, MAQET_PROBE_SYS_MODULE, MAQET_PROBE_DEV_KVM.
cpuinfo=${MAQET_PROBE_CPUINFO:-/proc/cpuinfo}
modules=${MAQET_PROBE_SYS_MODULE:-/sys/module}
dev=${MAQET_PROBE_DEV_KVM:-/dev/kvm}

flag=$(grep -m1 -o -w -E 'vmx|svm' "$cpuinfo" 2>/dev/null)
case $flag in
    vmx) module=kvm_intel ;;
    svm) module=kvm_amd ;;
    *) module= ;;
esac
kvm=false
if [ -z "$flag" ]; then
    reason="the CPU offers no virtualization extensions (no vmx or svm in $cpuinfo; in a VM, turn on nested virtualization): VMs run under TCG, much slower"
elif [ ! -d "$modules/$module" ]; then
    reason="the CPU has $flag but the $module module is not loaded (modprobe $module; is virtualization enabled in the firmware?): VMs run under TCG"
elif [ ! -e "$dev" ]; then
    reason="$module is loaded but $dev is missing: VMs run under TCG"
elif [ ! -r "$dev" ] || [ ! -w "$dev" ]; then
    reason="$dev cannot be opened read-write by $(id -un) (add it to the kvm group): VMs run under TCG"
else
    kvm=true
    reason="$flag, $module loaded, $dev usable"
fi
if [ -n "$flag" ]; then flag="\"$flag\""; else flag=null; fi
printf '{"kvm": %s, "cpu_virtualization": %s, "reason": "%s"}\n' "$kvm" "$flag" "$reason"
