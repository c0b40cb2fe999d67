# Get-StorageMoveStatus: the newest storage migration job of one VM - the Msvm_MigrationJob with
# JobType 307 (Moving Storage) whose VirtualSystemName is the VM id - and the VM's secondary
# operational status (StorageMigrationPhaseOne/Two while a move runs).
# Prints one MoveStatus document; job is null when no such job exists (a finished job is removed
# after its TimeBeforeRemoval, so the outcome must then be read from the VM's paths).
param([string]$VmId)
$ErrorActionPreference = 'Stop'

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

function ConvertTo-HvmIsoDate($value) {
    if ($value -is [datetime]) { return $value.ToUniversalTime().ToString('o') }
    return $null
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

# Every storage migration job (JobType 307) of the VM, finished ones included.
function Get-HvmMoveJobs([string]$vmKey) {
    Get-CimInstance -Namespace 'root\virtualization\v2' -ClassName Msvm_MigrationJob |
        Where-Object { [int]$_.JobType -eq 307 -and ([string]$_.VirtualSystemName).ToLowerInvariant() -eq $vmKey }
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

$vm = Get-HvmVm $VmId
$vmKey = $vm.Id.ToString().ToLowerInvariant()

$newest = Select-HvmNewestJob @(Get-HvmMoveJobs $vmKey)
$job = $null
if ($newest) { $job = ConvertTo-HvmMoveJob $newest }

$secondary = $null
if ($null -ne $vm.SecondaryOperationalStatus) { $secondary = [string]$vm.SecondaryOperationalStatus }

$out = [pscustomobject]@{
    vm_id            = $vm.Id.ToString()
    job              = $job
    secondary_status = $secondary
}
ConvertTo-Json -InputObject $out -Depth 8 -Compress
