# Get-PrecheckFacts: what the prechecks of many moves on this host read about each of their VMs, in
# one call: the VM as Get-VMInventory describes it (locations, drives with their VHD parent chains,
# checkpoints, ISOs, heartbeat, replication) and its newest storage migration job as
# Get-StorageMoveStatus reports it (Msvm_MigrationJob with JobType 307, read once for every VM).
# Prints one PrecheckFacts document with one entry per VmId, in order. A VM that cannot be read
# (not found, an invalid id, a cmdlet that fails for it) is an entry with its error, never a failure
# of the whole call: the caller then asks about that VM alone.
param([string[]]$VmId = @())
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

function Get-HvmPathKey([string]$path) {
    if ([string]::IsNullOrWhiteSpace($path)) { return '' }
    $p = $path.Trim()
    try { $p = [System.IO.Path]::GetFullPath($p) } catch { $p = $path.Trim() }
    return $p.TrimEnd('\').ToLowerInvariant()
}

function ConvertTo-HvmIsoDate($value) {
    if ($value -is [datetime]) { return $value.ToUniversalTime().ToString('o') }
    return $null
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

function ConvertTo-HvmVhdInfo($vhd) {
    $parent = $null
    if ($vhd.ParentPath) { $parent = [string]$vhd.ParentPath }
    return [pscustomobject]@{
        path            = [string]$vhd.Path
        format          = [string]$vhd.VhdFormat
        type            = [string]$vhd.VhdType
        file_size       = [int64]$vhd.FileSize
        size            = [int64]$vhd.Size
        parent_path     = $parent
        disk_identifier = [string]$vhd.DiskIdentifier
        attached        = [bool]$vhd.Attached
    }
}

# The values of an embedded instance (WMI DTD 2.0 XML) by property name.
function ConvertFrom-HvmEmbedded([string]$text) {
    $values = @{}
    if (-not $text) { return $values }
    $doc = [xml]$text
    foreach ($property in @($doc.INSTANCE.PROPERTY)) { $values[[string]$property.NAME] = [string]$property.VALUE }
    return $values
}

# Get-VHD resolves -Path as a wildcard pattern before its literal WMI call (UNC paths through the
# provider, local ones through a WQL LIKE query on CIM_DataFile that does not escape quotes: review
# windows-scripts.md finding 5, from the decompiled cmdlet), so a disk named 'web [prod].vhdx' is
# read on its literal path through Msvm_ImageManagementService.GetVirtualHardDiskSettingData and
# GetVirtualHardDiskState (learn.microsoft.com/windows/win32/hyperv_v2/msvm-imagemanagementservice)
# whenever the name holds [ ] * ? or '. Returns a hashtable with Get-VHD's property names.
function Get-HvmVhd([string]$path) {
    if ($path -notmatch "[\[\]\*\?']") {
        $vhd = Get-VHD -Path $path -ErrorAction Stop
        return @{
            Path = [string]$vhd.Path; ParentPath = [string]$vhd.ParentPath; VhdFormat = [string]$vhd.VhdFormat
            VhdType = [string]$vhd.VhdType; FileSize = [int64]$vhd.FileSize; Size = [int64]$vhd.Size
            DiskIdentifier = [string]$vhd.DiskIdentifier; Attached = [bool]$vhd.Attached
        }
    }
    $service = Get-CimInstance -Namespace 'root\virtualization\v2' -ClassName Msvm_ImageManagementService | Select-Object -First 1
    $read = Invoke-CimMethod -InputObject $service -MethodName GetVirtualHardDiskSettingData -Arguments @{ Path = $path }
    if ([int]$read.ReturnValue -ne 0) { throw "GetVirtualHardDiskSettingData returned $($read.ReturnValue) for '$path'" }
    $state = Invoke-CimMethod -InputObject $service -MethodName GetVirtualHardDiskState -Arguments @{ Path = $path }
    if ([int]$state.ReturnValue -ne 0) { throw "GetVirtualHardDiskState returned $($state.ReturnValue) for '$path'" }
    $settings = ConvertFrom-HvmEmbedded ([string]$read.SettingData)
    $facts = ConvertFrom-HvmEmbedded ([string]$state.State)
    $formats = @{ '2' = 'VHD'; '3' = 'VHDX'; '4' = 'VHDSet' }
    $types = @{ '2' = 'Fixed'; '3' = 'Dynamic'; '4' = 'Differencing' }
    $format = 'Unknown'
    if ($formats.ContainsKey($settings['Format'])) { $format = $formats[$settings['Format']] }
    $type = 'Unknown'
    if ($types.ContainsKey($settings['Type'])) { $type = $types[$settings['Type']] }
    return @{
        Path = $path; ParentPath = [string]$settings['ParentPath']; VhdFormat = $format; VhdType = $type
        FileSize = [int64]$facts['FileSize']; Size = [int64]$settings['MaxInternalSize']
        DiskIdentifier = [string]$settings['VirtualDiskId']; Attached = ($facts['InUse'] -eq 'TRUE')
    }
}

# Emits the VhdInfo of $path, then of its parent, and so on to the root of the chain.
function Get-HvmVhdChain([string]$path) {
    $seen = @{}
    $current = $path
    while ($current -and -not $seen.ContainsKey((Get-HvmPathKey $current)) -and $seen.Count -lt 64) {
        $seen[(Get-HvmPathKey $current)] = $true
        try {
            $vhd = Get-HvmVhd $current
        } catch {
            Write-Warning -Message "Get-VHD '$current' failed, the chain ends here: $($_.Exception.Message)"
            return
        }
        ConvertTo-HvmVhdInfo $vhd
        $current = [string]$vhd.ParentPath
    }
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

function Get-HvmReplicationState($vm) {
    $state = [string]$vm.ReplicationState
    if (-not $state -or $state -eq 'Disabled') { return 'Disabled' }
    try {
        $replication = Get-VMReplication -VM $vm -ErrorAction Stop | Select-Object -First 1
        if ($replication -and $null -ne $replication.ReplicationState) {
            $state = [string]$replication.ReplicationState
        }
    } catch {
        Write-Warning -Message "Get-VMReplication '$($vm.Name)' failed: $($_.Exception.Message)"
    }
    return $state
}

function Get-HvmVmInfo($vm) {
    $inChains = @{}
    $drives = [System.Collections.Generic.List[object]]::new()
    foreach ($d in @(Get-VMHardDiskDrive -VM $vm)) {
        $path = $null
        if ($d.Path) { $path = [string]$d.Path }
        $diskNumber = $null
        if ($null -ne $d.DiskNumber) { $diskNumber = [int]$d.DiskNumber }
        $chain = @()
        if ($path -and $null -eq $diskNumber) {
            $chain = @(Get-HvmVhdChain $path)
            foreach ($c in $chain) { $inChains[(Get-HvmPathKey $c.path)] = $true }
        }
        $drive = [pscustomobject]@{
            controller_type     = [string]$d.ControllerType
            controller_number   = [int]$d.ControllerNumber
            controller_location = [int]$d.ControllerLocation
            path                = $path
            disk_number         = $diskNumber
            shared              = [bool]$d.SupportPersistentReservations
            chain               = $chain
        }
        $drives.Add($drive)
    }

    $checkpoints = [System.Collections.Generic.List[object]]::new()
    $checkpointFiles = [System.Collections.Generic.List[object]]::new()
    foreach ($s in @(Get-VMSnapshot -VM $vm)) {
        $parentId = $null
        if ($s.ParentSnapshotId) { $parentId = [string]$s.ParentSnapshotId }
        $created = ConvertTo-HvmIsoDate $s.CreationTime
        if (-not $created) { $created = '' }
        $checkpoint = [pscustomobject]@{
            id        = [string]$s.Id
            name      = [string]$s.Name
            parent_id = $parentId
            created   = $created
        }
        $checkpoints.Add($checkpoint)
        foreach ($sd in @(Get-VMHardDiskDrive -VMSnapshot $s)) {
            if (-not $sd.Path -or $null -ne $sd.DiskNumber) { continue }
            foreach ($v in @(Get-HvmVhdChain ([string]$sd.Path))) {
                $key = Get-HvmPathKey $v.path
                if ($inChains.ContainsKey($key)) { continue }
                $inChains[$key] = $true
                $checkpointFiles.Add($v)
            }
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
    $configBytes = [int64]0
    try { $configBytes = [int64]$vm.SizeOfSystemFiles } catch { $configBytes = [int64]0 }

    return [pscustomobject]@{
        id                     = $vm.Id.ToString()
        name                   = [string]$vm.Name
        state                  = (Get-HvmStateName $vm.State)
        critical               = (Test-HvmCritical $vm.State)
        path                   = [string]$vm.Path
        configuration_location = [string]$vm.ConfigurationLocation
        snapshot_file_location = [string]$vm.SnapshotFileLocation
        smart_paging_file_path = [string]$vm.SmartPagingFilePath
        primary_status         = $primary
        secondary_status       = $secondary
        heartbeat              = (Get-HvmHeartbeat $vm)
        replication_state      = (Get-HvmReplicationState $vm)
        config_bytes           = $configBytes
        drives                 = $drives.ToArray()
        checkpoints            = $checkpoints.ToArray()
        checkpoint_files       = $checkpointFiles.ToArray()
        dvd_paths              = $dvdPaths.ToArray()
    }
}

function Get-HvmJobStateName($code) {
    switch ([int]$code) {
        2 { return 'New' }
        3 { return 'Starting' }
        4 { return 'Running' }
        5 { return 'Suspended' }
        6 { return 'ShuttingDown' }
        7 { return 'Completed' }
        8 { return 'Terminated' }
        9 { return 'Killed' }
        10 { return 'Exception' }
        default { return 'Unknown' }
    }
}

function Select-HvmNewestJob($jobs) {
    $best = $null
    $bestKey = [datetime]::MinValue
    foreach ($j in @($jobs)) {
        if ($null -eq $j) { continue }
        $key = [datetime]::MaxValue
        if ($j.StartTime -is [datetime]) { $key = $j.StartTime }
        elseif ($j.TimeSubmitted -is [datetime]) { $key = $j.TimeSubmitted }
        if ($null -eq $best -or $key -gt $bestKey) {
            $best = $j
            $bestKey = $key
        }
    }
    return $best
}

function ConvertTo-HvmMoveJob($job) {
    $vmId = [string]$job.VirtualSystemName
    $guid = [guid]::Empty
    if ([guid]::TryParse($vmId, [ref]$guid)) { $vmId = $guid.ToString() }
    $elapsed = 0.0
    if ($job.ElapsedTime -is [timespan]) { $elapsed = [double]$job.ElapsedTime.TotalSeconds }
    $percent = [int]$job.PercentComplete
    if ($percent -lt 0) { $percent = 0 }
    if ($percent -gt 100) { $percent = 100 }
    return [pscustomobject]@{
        job_id            = [string]$job.InstanceID
        vm_id             = $vmId
        job_state         = (Get-HvmJobStateName $job.JobState)
        percent_complete  = $percent
        error_code        = [int]$job.ErrorCode
        error_description = [string]$job.ErrorDescription
        start_time        = (ConvertTo-HvmIsoDate $job.StartTime)
        elapsed_seconds   = [math]::Round($elapsed, 3)
        cancellable       = [bool]$job.Cancellable
    }
}

# Every storage migration job (JobType 307) of this host, finished ones included, by lower-case VM
# id: one WMI query for the whole batch instead of one per VM.
function Get-HvmMoveJobsByVm {
    $byVm = @{}
    foreach ($j in @(Get-CimInstance -Namespace 'root\virtualization\v2' -ClassName Msvm_MigrationJob)) {
        if ($null -eq $j -or [int]$j.JobType -ne 307) { continue }
        $key = ([string]$j.VirtualSystemName).ToLowerInvariant()
        if (-not $byVm.ContainsKey($key)) { $byVm[$key] = [System.Collections.Generic.List[object]]::new() }
        $byVm[$key].Add($j)
    }
    return $byVm
}

# One entry: the VM and its move status, or the reason it could not be read.
function Get-HvmPrecheckEntry([string]$id, $jobsByVm) {
    try {
        $vm = Get-HvmVm $id
        $info = Get-HvmVmInfo $vm
        $vmKey = $vm.Id.ToString().ToLowerInvariant()
        $job = $null
        if ($jobsByVm.ContainsKey($vmKey)) {
            $newest = Select-HvmNewestJob @($jobsByVm[$vmKey])
            if ($newest) { $job = ConvertTo-HvmMoveJob $newest }
        }
        $secondary = $null
        if ($null -ne $vm.SecondaryOperationalStatus) { $secondary = [string]$vm.SecondaryOperationalStatus }
        $move = [pscustomobject]@{
            vm_id            = $vm.Id.ToString()
            job              = $job
            secondary_status = $secondary
        }
        return [pscustomobject]@{
            vm_id = $id
            vm    = $info
            move  = $move
            error = ''
        }
    } catch {
        return [pscustomobject]@{
            vm_id = $id
            vm    = $null
            move  = $null
            error = [string]$_.Exception.Message
        }
    }
}

$jobsByVm = Get-HvmMoveJobsByVm
$entries = [System.Collections.Generic.List[object]]::new()
foreach ($id in @($VmId)) { $entries.Add((Get-HvmPrecheckEntry ([string]$id) $jobsByVm)) }

$out = [pscustomobject]@{
    host = [string]$env:COMPUTERNAME
    vms  = $entries.ToArray()
}
ConvertTo-Json -InputObject $out -Depth 8 -Compress
