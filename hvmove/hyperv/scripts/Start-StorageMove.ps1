# Start-StorageMove: starts the storage migration of one VM in one of the three Move Wizard modes:
#   all        - everything to DestinationStoragePath;
#   components - VirtualMachinePath / SnapshotFilePath / SmartPagingFilePath and disk pairs;
#   vhds       - only the disk pairs (VhdSourcePath[i] -> VhdDestinationPath[i]).
# Two ways to start it, because they leave the source differently:
#   -KeepSource: Msvm_VirtualSystemMigrationService.MigrateVirtualSystemToHost (MigrationType 32769,
#     Storage) with AvoidRemovingVHDs, so that Hyper-V deletes no source disk at the switch and
#     hvmove deletes it after verifying the destination (method 'wmi');
#   otherwise Move-VMStorage -AsJob, which deletes the source copy of every moved disk at the switch
#     (-RetainVhdCopiesOnSource keeps only parent disks) (method 'move-vmstorage').
# It starts nothing when a migration job of the VM is running (status already_running) or when
# every component named already resolves to its destination (status already_at_destination). It
# refuses (throws) a malformed request, a disk source that is not a disk of the VM or of one of
# its checkpoints (Hyper-V would silently treat it as an unmanaged VHD), a changed file name, a
# shared disk, an existing destination file, a host already at MaximumStorageMigrations, and
# -KeepSource on a host whose WMI has no AvoidRemovingVHDs.
# After starting it waits up to WaitSeconds for the new Msvm_MigrationJob (JobType 307) to appear.
# Prints one MoveStart document; the cmdlet's warnings (e.g. skipped shared disks) go to warnings.
param(
    [string]$VmId,
    [string]$Mode,
    [string]$DestinationStoragePath = '',
    [string]$VirtualMachinePath = '',
    [string]$SnapshotFilePath = '',
    [string]$SmartPagingFilePath = '',
    [string[]]$VhdSourcePath = @(),
    [string[]]$VhdDestinationPath = @(),
    [switch]$RetainVhdCopiesOnSource,
    [switch]$KeepSource,
    [int]$WaitSeconds = 30
)
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

function Get-HvmPathKey([string]$path) {
    if ([string]::IsNullOrWhiteSpace($path)) { return '' }
    $p = $path.Trim()
    try { $p = [System.IO.Path]::GetFullPath($p) } catch { $p = $path.Trim() }
    return $p.TrimEnd('\').ToLowerInvariant()
}

function Test-HvmAbsolutePath([string]$path) {
    return ($path -match '^[A-Za-z]:\\' -or $path -match '^\\\\[^\\]+\\[^\\]+')
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

function New-HvmResult([string]$vmId, [string]$status, $job, [string]$message, $warnings, [string]$method) {
    return [pscustomobject]@{
        vm_id    = $vmId
        status   = $status
        job      = $job
        message  = $message
        warnings = @($warnings)
        method   = $method
    }
}

# Whether this host's Msvm_VirtualSystemMigrationSettingData has AvoidRemovingVHDs ("Do not remove
# any VHDs during the migration, i.e. VHDs on the source in success and VHDs on the destination in
# failure", learn.microsoft.com/windows/win32/hyperv_v2/msvm-virtualsystemmigrationsettingdata).
# The page does not say from which build it exists, so the class is asked, never the OS version.
function Test-HvmAvoidRemovingVhds {
    try {
        $class = Get-CimClass -Namespace 'root\virtualization\v2' -ClassName Msvm_VirtualSystemMigrationSettingData -ErrorAction Stop
        $found = @($class.CimClassProperties | Where-Object { $_.Name -eq 'AvoidRemovingVHDs' })
        if ($found.Count -gt 0) { return '' }
        return 'Msvm_VirtualSystemMigrationSettingData has no AvoidRemovingVHDs property on this host'
    } catch {
        return 'Msvm_VirtualSystemMigrationSettingData could not be read: ' + $_.Exception.Message
    }
}

# The storage migration with every source copy kept. Move-VMStorage cannot do it: its
# -RetainVhdCopiesOnSource keeps only parent disks ("If not specified, all virtual hard disks will be
# removed from the source computer once the virtual machine is successfully moved",
# learn.microsoft.com/powershell/module/hyper-v/move-vmstorage), and the WMI property behind it
# concerns "the read-only VHDs on the source host" (msvm-virtualsystemmigrationsettingdata).
# So this calls MigrateVirtualSystemToHost itself (learn.microsoft.com/windows/win32/hyperv_v2/
# migratevirtualsystemtohost-msvm-virtualsystemmigrationservice): MigrationType 32769 (Storage),
# DestinationHost null (this host), one Msvm_StorageAllocationSettingData per moved disk with its
# new HostResource, and the realized Msvm_VirtualSystemSettingData with new configuration,
# checkpoint and smart-paging roots when one of them moves. The string parameters take embedded
# instances, written with GetText(1) (WMI DTD 2.0). Returns the method's return value.
function Start-HvmWmiStorageMove([string]$vmKey, [hashtable]$diskTargets, [hashtable]$rootTargets) {
    $ns = 'root\virtualization\v2'
    $service = Get-WmiObject -Namespace $ns -Class Msvm_VirtualSystemMigrationService | Select-Object -First 1
    $system = Get-WmiObject -Namespace $ns -Class Msvm_ComputerSystem |
        Where-Object { ([string]$_.Name).ToLowerInvariant() -eq $vmKey } | Select-Object -First 1
    if (-not $service -or -not $system) { throw "Msvm_VirtualSystemMigrationService or the VM's Msvm_ComputerSystem is missing" }
    $settingClass = Get-WmiObject -Namespace $ns -Class Msvm_VirtualSystemMigrationSettingData -List | Select-Object -First 1
    $migration = $settingClass.CreateInstance()
    $migration.MigrationType = [uint16]32769
    $migration.AvoidRemovingVHDs = $true
    $migration.RetainVhdCopiesOnSource = $true
    $resources = [System.Collections.Generic.List[string]]::new()
    $seen = @{}
    $realized = $null
    $allSettings = @(Get-WmiObject -Namespace $ns -Class Msvm_VirtualSystemSettingData |
            Where-Object { ([string]$_.VirtualSystemIdentifier).ToLowerInvariant() -eq $vmKey })
    foreach ($settings in $allSettings) {
        if ([string]$settings.VirtualSystemType -eq 'Microsoft:Hyper-V:System:Realized') { $realized = $settings }
        foreach ($disk in @($settings.GetRelated('Msvm_StorageAllocationSettingData'))) {
            if ([int]$disk.ResourceType -ne 31) { continue }
            $key = Get-HvmPathKey ([string]@($disk.HostResource)[0])
            if (-not $diskTargets.ContainsKey($key) -or $seen.ContainsKey([string]$disk.InstanceID)) { continue }
            $seen[[string]$disk.InstanceID] = $true
            $disk.HostResource = [string[]]@($diskTargets[$key])
            $resources.Add($disk.GetText(1))
        }
    }
    $systemText = $null
    if ($rootTargets.Count -gt 0) {
        if (-not $realized) { throw "the VM's realized Msvm_VirtualSystemSettingData was not found" }
        if ($rootTargets.ContainsKey('VirtualMachinePath')) { $realized.ConfigurationDataRoot = $rootTargets['VirtualMachinePath'] }
        if ($rootTargets.ContainsKey('SnapshotFilePath')) { $realized.SnapshotDataRoot = $rootTargets['SnapshotFilePath'] }
        if ($rootTargets.ContainsKey('SmartPagingFilePath')) { $realized.SwapFileDataRoot = $rootTargets['SmartPagingFilePath'] }
        $systemText = $realized.GetText(1)
    }
    $result = $service.MigrateVirtualSystemToHost($system, $null, $migration.GetText(1), $systemText, $resources.ToArray())
    return [int]$result.ReturnValue
}

function Invoke-HvmStorageMove {
    $modeName = ([string]$Mode).Trim().ToLowerInvariant()
    if (@('all', 'components', 'vhds') -notcontains $modeName) {
        throw "Mode '$Mode' is not one of: all, components, vhds"
    }
    $wait = $WaitSeconds
    if ($wait -lt 0) { $wait = 0 }
    if ($wait -gt 600) { $wait = 600 }

    $vm = Get-HvmVm $VmId
    $vmId = $vm.Id.ToString()
    $vmKey = $vmId.ToLowerInvariant()
    $noWarnings = [string[]]@()
    $method = 'move-vmstorage'
    if ($KeepSource) { $method = 'wmi' }

    # 1. A migration of this VM is already running: attach to it, start nothing.
    $existingJobs = @(Get-HvmMoveJobs $vmKey)
    $runningJobs = @($existingJobs | Where-Object { [int]$_.JobState -ge 2 -and [int]$_.JobState -le 6 })
    if ($runningJobs.Count -gt 0) {
        $job = ConvertTo-HvmMoveJob (Select-HvmNewestJob $runningJobs)
        return New-HvmResult $vmId 'already_running' $job 'a storage migration of this VM is already running; nothing was started' $noWarnings $method
    }

    # 2. The shape of the request.
    $destination = ([string]$DestinationStoragePath).Trim()
    $paths = [ordered]@{
        VirtualMachinePath  = ([string]$VirtualMachinePath).Trim()
        SnapshotFilePath    = ([string]$SnapshotFilePath).Trim()
        SmartPagingFilePath = ([string]$SmartPagingFilePath).Trim()
    }
    $sources = @()
    if ($null -ne $VhdSourcePath) { $sources = @($VhdSourcePath) }
    $targets = @()
    if ($null -ne $VhdDestinationPath) { $targets = @($VhdDestinationPath) }
    $namedPaths = @($paths.Keys | Where-Object { $paths[$_] })

    if ($modeName -eq 'all') {
        if (-not $destination) { throw "Mode 'all' needs DestinationStoragePath" }
        if ($namedPaths.Count -gt 0 -or $sources.Count -gt 0 -or $targets.Count -gt 0) {
            throw "Mode 'all' takes only DestinationStoragePath; leave VirtualMachinePath, SnapshotFilePath, SmartPagingFilePath, VhdSourcePath and VhdDestinationPath empty"
        }
        if (-not (Test-HvmAbsolutePath $destination)) {
            throw "DestinationStoragePath '$destination' is not an absolute path"
        }
    } else {
        if ($destination) { throw "Mode '$modeName' does not take DestinationStoragePath; use mode 'all'" }
        if ($modeName -eq 'vhds' -and $namedPaths.Count -gt 0) {
            throw "Mode 'vhds' takes only VhdSourcePath and VhdDestinationPath (got $($namedPaths -join ', ') as well); use mode 'components'"
        }
        if ($sources.Count -ne $targets.Count) {
            throw "VhdSourcePath has $($sources.Count) entries but VhdDestinationPath has $($targets.Count); they must pair up"
        }
        if ($modeName -eq 'vhds' -and $sources.Count -eq 0) {
            throw "Mode 'vhds' needs at least one VhdSourcePath/VhdDestinationPath pair"
        }
        if ($modeName -eq 'components' -and $sources.Count -eq 0 -and $namedPaths.Count -eq 0) {
            throw "Mode 'components' needs at least one of VirtualMachinePath, SnapshotFilePath, SmartPagingFilePath or a VhdSourcePath/VhdDestinationPath pair"
        }
        foreach ($name in $namedPaths) {
            if (-not (Test-HvmAbsolutePath $paths[$name])) { throw "$name '$($paths[$name])' is not an absolute path" }
        }
        $seenSources = @{}
        $seenTargets = @{}
        for ($i = 0; $i -lt $sources.Count; $i++) {
            $src = ([string]$sources[$i]).Trim()
            $dst = ([string]$targets[$i]).Trim()
            if (-not (Test-HvmAbsolutePath $src)) { throw "VhdSourcePath '$src' is not an absolute path" }
            if (-not (Test-HvmAbsolutePath $dst)) { throw "VhdDestinationPath '$dst' is not an absolute path" }
            $srcName = [System.IO.Path]::GetFileName($src)
            $dstName = [System.IO.Path]::GetFileName($dst)
            if (-not $dstName -or $srcName -ne $dstName) {
                throw "VhdDestinationPath '$dst' must keep the file name of '$src' ($srcName); Move-VMStorage cannot rename a disk"
            }
            if ($seenSources.ContainsKey((Get-HvmPathKey $src))) { throw "VhdSourcePath '$src' is listed twice" }
            if ($seenTargets.ContainsKey((Get-HvmPathKey $dst))) { throw "VhdDestinationPath '$dst' is listed twice" }
            $seenSources[(Get-HvmPathKey $src)] = $true
            $seenTargets[(Get-HvmPathKey $dst)] = $true
        }
    }

    # 3. The VM's disks: files attached to its drives and to its checkpoints' drives.
    $vmDisks = @{}
    $sharedDisks = @{}
    $drives = [System.Collections.Generic.List[object]]::new()
    foreach ($d in @(Get-VMHardDiskDrive -VM $vm)) { $drives.Add($d) }
    foreach ($s in @(Get-VMSnapshot -VM $vm)) {
        foreach ($d in @(Get-VMHardDiskDrive -VMSnapshot $s)) { $drives.Add($d) }
    }
    foreach ($d in $drives) {
        if (-not $d.Path -or $null -ne $d.DiskNumber) { continue }
        $key = Get-HvmPathKey ([string]$d.Path)
        if (-not $vmDisks.ContainsKey($key)) { $vmDisks[$key] = [string]$d.Path }
        if ($d.SupportPersistentReservations) { $sharedDisks[$key] = $true }
    }

    # 4. What is not at its destination yet.
    $moveArgs = @{}
    $pendingFiles = [System.Collections.Generic.List[string]]::new()
    $vhdTables = [System.Collections.Generic.List[hashtable]]::new()
    $diskTargets = @{}
    $rootTargets = @{}
    $pendingCount = 0
    if ($modeName -eq 'all') {
        $destinationKey = Get-HvmPathKey $destination
        foreach ($location in @($vm.ConfigurationLocation, $vm.SnapshotFileLocation, $vm.SmartPagingFilePath)) {
            if ((Get-HvmPathKey ([string]$location)) -ne $destinationKey) { $pendingCount++ }
        }
        $targetNames = @{}
        foreach ($key in @($vmDisks.Keys)) {
            if ($sharedDisks.ContainsKey($key)) { continue }
            $original = $vmDisks[$key]
            $leaf = [System.IO.Path]::GetFileName($original)
            $target = [System.IO.Path]::Combine($destination, 'Virtual Hard Disks', $leaf)
            if ((Get-HvmPathKey $target) -eq $key) { continue }
            if ($targetNames.ContainsKey($leaf.ToLowerInvariant())) {
                throw "Disks '$($targetNames[$leaf.ToLowerInvariant()])' and '$original' have the same file name; mode 'all' would put both at '$target'. Use mode 'vhds' or 'components'"
            }
            $targetNames[$leaf.ToLowerInvariant()] = $original
            $pendingFiles.Add($target)
            $diskTargets[$key] = $target
            $pendingCount++
        }
        $moveArgs['DestinationStoragePath'] = $destination
        foreach ($name in @('VirtualMachinePath', 'SnapshotFilePath', 'SmartPagingFilePath')) { $rootTargets[$name] = $destination }
    } else {
        $current = @{
            VirtualMachinePath  = [string]$vm.ConfigurationLocation
            SnapshotFilePath    = [string]$vm.SnapshotFileLocation
            SmartPagingFilePath = [string]$vm.SmartPagingFilePath
        }
        foreach ($name in $namedPaths) {
            if ((Get-HvmPathKey $paths[$name]) -ne (Get-HvmPathKey $current[$name])) {
                $moveArgs[$name] = $paths[$name]
                $rootTargets[$name] = $paths[$name]
                $pendingCount++
            }
        }
        for ($i = 0; $i -lt $sources.Count; $i++) {
            $src = ([string]$sources[$i]).Trim()
            $dst = ([string]$targets[$i]).Trim()
            $srcKey = Get-HvmPathKey $src
            $dstKey = Get-HvmPathKey $dst
            if ($srcKey -eq $dstKey) { continue }
            if ($vmDisks.ContainsKey($dstKey) -and -not $vmDisks.ContainsKey($srcKey)) { continue }
            if (-not $vmDisks.ContainsKey($srcKey)) {
                throw "VhdSourcePath '$src' is not a disk of VM '$($vm.Name)' or of its checkpoints; Hyper-V would treat it as an unmanaged VHD, so it is refused"
            }
            if ($sharedDisks.ContainsKey($srcKey)) {
                throw "VhdSourcePath '$src' is a shared disk (SupportPersistentReservations); shared disks cannot be storage-migrated"
            }
            $vhdTables.Add(@{ SourceFilePath = $vmDisks[$srcKey]; DestinationFilePath = $dst })
            $pendingFiles.Add($dst)
            $diskTargets[$srcKey] = $dst
            $pendingCount++
        }
        if ($vhdTables.Count -gt 0) { $moveArgs['Vhds'] = $vhdTables.ToArray() }
    }
    if ($pendingCount -eq 0) {
        return New-HvmResult $vmId 'already_at_destination' $null 'every component the request names already resolves to its destination; nothing was started' $noWarnings $method
    }

    # 5. Refusals Hyper-V would only report later, or not clearly.
    foreach ($file in $pendingFiles) {
        if (Test-Path -LiteralPath $file) {
            throw "Destination file '$file' already exists; Move-VMStorage does not overwrite it. Remove it or choose another destination"
        }
    }
    $limit = [int64](Get-VMHost).MaximumStorageMigrations
    $hostRunning = @(
        Get-CimInstance -Namespace 'root\virtualization\v2' -ClassName Msvm_MigrationJob |
            Where-Object { [int]$_.JobType -eq 307 -and [int]$_.JobState -ge 2 -and [int]$_.JobState -le 6 }
    ).Count
    if ($limit -gt 0 -and $hostRunning -ge $limit) {
        # a busy refusal, told by its id and category (messages of a host may be localized)
        Write-Error -Message "Storage migration limit reached on this host: $hostRunning of $limit (MaximumStorageMigrations) are running; try again when one has finished" -Category ResourceBusy -ErrorId 'HvmoveMigrationLimit'
    }

    # 6. Start it. With -KeepSource through WMI (above); otherwise Move-VMStorage -AsJob, which
    # validates its parameters here (errors throw) and runs the migration in a job of this
    # runspace. Finished jobs of earlier calls are removed first: "the job remains in the global
    # job cache until you close the session" (Remove-Job, about_Jobs), each holding its VM's
    # objects. Only finished ones, and without -Force: with -Force a Running or NotStarted job is
    # stopped (RemoveJobCommand.Force), and stopping a VmJob cancels its migration (hyperv.md 2.4).
    Get-Job | Where-Object { $_.State -eq 'Completed' -or $_.State -eq 'Failed' -or $_.State -eq 'Stopped' } | Remove-Job
    $knownJobs = @{}
    foreach ($j in $existingJobs) { $knownJobs[[string]$j.InstanceID] = $true }
    $moveWarnings = $null
    $psJob = $null
    if ($KeepSource) {
        $missing = Test-HvmAvoidRemovingVhds
        if ($missing) { throw "Cannot keep the source until verified on this host: $missing; move with keep_source_until_verified: false (Move-VMStorage deletes the moved disks' source at the switch)" }
        $code = Start-HvmWmiStorageMove $vmKey $diskTargets $rootTargets
        if ($code -ne 0 -and $code -ne 4096) {
            # 32774 "System is in use" and 32775 "Invalid state for this operation" clear by
            # themselves; the code travels in the error id, which is not localized
            $category = 'InvalidOperation'
            if ($code -eq 32774 -or $code -eq 32775) { $category = 'ResourceBusy' }
            Write-Error -Message "MigrateVirtualSystemToHost returned $code for VM '$($vm.Name)' (4096 = job started; 32775 = invalid state, 32773 = invalid parameter, 32769 = access denied)" -Category $category -ErrorId "HvmoveWmiReturn$code"
        }
    } else {
        if ($RetainVhdCopiesOnSource) { $moveArgs['RetainVhdCopiesOnSource'] = $true }
        $psJob = Move-VMStorage -VM $vm @moveArgs -AsJob -Confirm:$false -WarningVariable moveWarnings -ErrorAction Stop
        if ($psJob -is [array]) { $psJob = $psJob[0] }
    }

    # 7. Wait for the new Msvm_MigrationJob. The runspace must not close before Hyper-V has it.
    $deadline = [datetime]::UtcNow.AddSeconds($wait)
    $found = $null
    while ($true) {
        $fresh = @(Get-HvmMoveJobs $vmKey | Where-Object { -not $knownJobs.ContainsKey([string]$_.InstanceID) })
        if ($fresh.Count -gt 0) {
            $found = Select-HvmNewestJob $fresh
            break
        }
        $state = ''
        if ($psJob) { $state = [string]$psJob.JobStateInfo.State }
        if ($state -and $state -ne 'NotStarted' -and $state -ne 'Running') { break }
        if ([datetime]::UtcNow -ge $deadline) { break }
        Start-Sleep -Milliseconds 500
    }
    if (-not $found) {
        $fresh = @(Get-HvmMoveJobs $vmKey | Where-Object { -not $knownJobs.ContainsKey([string]$_.InstanceID) })
        if ($fresh.Count -gt 0) { $found = Select-HvmNewestJob $fresh }
    }

    $warnings = [System.Collections.Generic.List[string]]::new()
    $warningSources = @()
    if ($moveWarnings) { $warningSources += @($moveWarnings) }
    if ($psJob -and $psJob.Warning) { $warningSources += @($psJob.Warning) }
    foreach ($w in $warningSources) {
        $text = [string]$w.Message
        if (-not $text) { $text = [string]$w }
        if ($text -and -not $warnings.Contains($text)) { $warnings.Add($text) }
    }
    $errors = [System.Collections.Generic.List[string]]::new()
    if ($psJob -and $psJob.Error) {
        foreach ($e in @($psJob.Error)) {
            $text = [string]$e.Exception.Message
            if (-not $text) { $text = [string]$e }
            if ($text -and -not $errors.Contains($text)) { $errors.Add($text) }
        }
    }

    if ($found) {
        $message = ''
        if ($errors.Count -gt 0) { $message = 'Move-VMStorage reported: ' + ($errors -join ' | ') }
        return New-HvmResult $vmId 'started' (ConvertTo-HvmMoveJob $found) $message $warnings.ToArray() $method
    }
    if ($psJob -and $psJob.Error -and @($psJob.Error).Count -gt 0) {
        # the cmdlet's own error record: its FullyQualifiedErrorId, category and exception
        # (with HResult) classify it on a host of any language; the message is localized
        throw @($psJob.Error)[0]
    }
    $state = ''
    if ($psJob) { $state = [string]$psJob.JobStateInfo.State }
    if ($state -eq 'NotStarted' -or $state -eq 'Running') {
        $message = "The storage migration was started but no migration job appeared within $wait s; poll Get-StorageMoveStatus"
    } else {
        $message = "The storage migration was started ($state) but no migration job is visible; poll Get-StorageMoveStatus and read the VM's paths to confirm the outcome"
    }
    return New-HvmResult $vmId 'started' $null $message $warnings.ToArray() $method
}

$out = Invoke-HvmStorageMove
ConvertTo-Json -InputObject $out -Depth 8 -Compress
