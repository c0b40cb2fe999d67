# Stop-StorageMove: asks Hyper-V to cancel one VM's running storage migration by calling
# RequestStateChange(4 = Terminate) on its newest Msvm_MigrationJob (JobType 307), when that job
# is running (JobState 2..6). Cancelling is asynchronous and not guaranteed (Cancellable may be
# false late in the job); the VM then stays on its source files.
# Prints one MoveStop document: requested is false when there was nothing to stop; return_value is
# the method's return code (0 done, 4096 transition started); job is the job as read afterwards.
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
$requested = $false
$returnValue = $null
if ($newest -and [int]$newest.JobState -ge 2 -and [int]$newest.JobState -le 6) {
    $result = Invoke-CimMethod -InputObject $newest -MethodName RequestStateChange -Arguments @{ RequestedState = [uint16]4 } -Confirm:$false
    $returnValue = [int64]$result.ReturnValue
    # requested only when Hyper-V took it: 0 (done) or 4096 (a job started); 32775 "Invalid state"
    # comes late in a move, when Cancellable is false (requeststatechange-msvm-migrationjob)
    $requested = ($returnValue -eq 0 -or $returnValue -eq 4096)
    if (-not $requested) {
        Write-Warning -Message "RequestStateChange(4) returned $returnValue (Cancellable was $($newest.Cancellable))"
    }
    Start-Sleep -Milliseconds 500
    try {
        $refreshed = Get-CimInstance -InputObject $newest -ErrorAction Stop
        if ($refreshed) { $newest = $refreshed }
    } catch {
        Write-Warning -Message "The migration job could not be read again: $($_.Exception.Message)"
    }
}

$job = $null
if ($newest) { $job = ConvertTo-HvmMoveJob $newest }

$out = [pscustomobject]@{
    vm_id        = $vm.Id.ToString()
    requested    = $requested
    return_value = $returnValue
    job          = $job
}
ConvertTo-Json -InputObject $out -Depth 8 -Compress
