# Get-VMStoragePaths: where one VM's storage lives now - its configuration, checkpoint and smart
# paging locations, the files attached to its drives (pass-through disks left out), the disks of
# its checkpoints and its ISO files - with its state, status and heartbeat.
# Prints one VMPaths document; used to decide whether a move switched the VM over.
param([string]$VmId)
$ErrorActionPreference = 'Stop'

$HeartbeatServiceId = '84EAAE65-2F2E-45F5-9BB5-0E857DC8EB47'

function Get-HvmVm([string]$id) {
    $guid = [guid]::Empty
    if (-not [guid]::TryParse($id, [ref]$guid)) { throw "VmId '$id' is not a valid VM id (a GUID)" }
    $found = @()
    $detail = ''
    try {
        $found = @(Get-VM -Id $guid -ErrorAction SilentlyContinue -ErrorVariable lookupErrors)
        if ($lookupErrors.Count -gt 0) { $detail = ': ' + $lookupErrors[0].Exception.Message }
    } catch {
        $detail = ': ' + $_.Exception.Message
    }
    if ($found.Count -eq 0) { throw "VM $id not found on this host$detail" }
    return $found[0]
}

# VM.State carries Critical variants (RunningCritical, OffCritical, SavedCritical, ...) whenever the
# VM's health is not OK, e.g. its storage is low on space (Msvm_ComputerSystem.HealthState 20/25,
# learn.microsoft.com/windows/win32/hyperv_v2/msvm-computersystem): the state is the one without
# the suffix, and Test-HvmCritical says it was critical.
function Get-HvmStateName($state) {
    $text = [string]$state
    if ($text.EndsWith('Critical')) { $text = $text.Substring(0, $text.Length - 'Critical'.Length) }
    if (@('Running', 'Off', 'Saved', 'Paused', 'Starting', 'Stopping') -contains $text) { return $text }
    if ($text -eq 'FastSaved') { return 'Saved' }
    return 'Other'
}

function Test-HvmCritical($state) {
    return ([string]$state).EndsWith('Critical')
}

# The heartbeat integration service, found by its id (service names are localized).
function Get-HvmHeartbeat($vm) {
    try {
        $services = @(Get-VMIntegrationService -VM $vm -ErrorAction Stop)
    } catch {
        return $null
    }
    $hb = $services | Where-Object { [string]$_.Id -like "*$HeartbeatServiceId*" } | Select-Object -First 1
    if (-not $hb) { $hb = $services | Where-Object { [string]$_.Name -eq 'Heartbeat' } | Select-Object -First 1 }
    if (-not $hb) { return $null }
    if (-not $hb.Enabled) { return 'Disabled' }
    if ($null -ne $vm.Heartbeat) { return [string]$vm.Heartbeat }
    if ($null -ne $hb.PrimaryOperationalStatus) { return [string]$hb.PrimaryOperationalStatus }
    return $null
}

$vm = Get-HvmVm $VmId

$diskPaths = [System.Collections.Generic.List[string]]::new()
foreach ($d in @(Get-VMHardDiskDrive -VM $vm)) {
    if ($d.Path -and $null -eq $d.DiskNumber) { $diskPaths.Add([string]$d.Path) }
}

$seen = @{}
$checkpointDiskPaths = [System.Collections.Generic.List[string]]::new()
foreach ($s in @(Get-VMSnapshot -VM $vm)) {
    foreach ($d in @(Get-VMHardDiskDrive -VMSnapshot $s)) {
        if (-not $d.Path -or $null -ne $d.DiskNumber) { continue }
        $key = ([string]$d.Path).ToLowerInvariant()
        if ($seen.ContainsKey($key)) { continue }
        $seen[$key] = $true
        $checkpointDiskPaths.Add([string]$d.Path)
    }
}

$dvdPaths = [System.Collections.Generic.List[string]]::new()
foreach ($dvd in @(Get-VMDvdDrive -VM $vm)) {
    if ($dvd.Path -and [string]$dvd.DvdMediaType -ne 'PassThrough') { $dvdPaths.Add([string]$dvd.Path) }
}

$primary = 'Unknown'
if ($null -ne $vm.PrimaryOperationalStatus) { $primary = [string]$vm.PrimaryOperationalStatus }
$secondary = $null
if ($null -ne $vm.SecondaryOperationalStatus) { $secondary = [string]$vm.SecondaryOperationalStatus }

$out = [pscustomobject]@{
    id                     = $vm.Id.ToString()
    name                   = [string]$vm.Name
    state                  = (Get-HvmStateName $vm.State)
    critical               = (Test-HvmCritical $vm.State)
    configuration_location = [string]$vm.ConfigurationLocation
    snapshot_file_location = [string]$vm.SnapshotFileLocation
    smart_paging_file_path = [string]$vm.SmartPagingFilePath
    disk_paths             = $diskPaths.ToArray()
    checkpoint_disk_paths  = $checkpointDiskPaths.ToArray()
    dvd_paths              = $dvdPaths.ToArray()
    heartbeat              = (Get-HvmHeartbeat $vm)
    primary_status         = $primary
    secondary_status       = $secondary
}
ConvertTo-Json -InputObject $out -Depth 8 -Compress
