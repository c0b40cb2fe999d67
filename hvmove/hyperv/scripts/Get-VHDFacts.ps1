# Get-VHDFacts: checks a list of virtual disk files with Test-VHD (the file and its parent chain)
# and reads them with Get-VHD (format, type, sizes, parent, disk identifier, attached).
# Prints one VhdReport document with one entry per path, in order. A missing file is
# exists=false with test_ok and vhd null; a failing Test-VHD or Get-VHD is reported in error
# (test_ok false when Test-VHD failed) instead of stopping the script.
param([string[]]$Path = @())
$ErrorActionPreference = 'Stop'

function Test-HvmAbsolutePath([string]$path) {
    return ($path -match '^[A-Za-z]:\\' -or $path -match '^\\\\[^\\]+\\[^\\]+')
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

# Test-Path writes an error when access is denied or the path is too long (PowerShell's
# FileSystemProvider.ItemExists: ItemExistsUnauthorizedAccessError, ItemExistsPathTooLongError)
# and then says False; with $ErrorActionPreference = 'Stop' that error ends the script. So every
# existence test has three answers: 'exists', 'absent', or 'unreachable: <why>'.
function Get-HvmPathState([string]$path) {
    $problems = $null
    $found = Test-Path -LiteralPath $path -ErrorAction SilentlyContinue -ErrorVariable problems
    if ($problems -and @($problems).Count -gt 0) { return 'unreachable: ' + [string]@($problems)[0].Exception.Message }
    if ($found) { return 'exists' }
    return 'absent'
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

# Test-VHD resolves -Path as Get-VHD does; a name with [ ] * ? or ' is validated on its literal path
# with Msvm_ImageManagementService.ValidateVirtualHardDisk (which starts a job: 4096, followed to its
# end; learn.microsoft.com/windows/win32/hyperv_v2/validatevirtualharddisk-msvm-imagemanagementservice).
function Test-HvmVhd([string]$path) {
    if ($path -notmatch "[\[\]\*\?']") {
        $result = @(Test-VHD -Path $path -ErrorAction Stop)
        return ($result.Count -gt 0 -and $result[0] -eq $true)
    }
    $service = Get-CimInstance -Namespace 'root\virtualization\v2' -ClassName Msvm_ImageManagementService | Select-Object -First 1
    $call = Invoke-CimMethod -InputObject $service -MethodName ValidateVirtualHardDisk -Arguments @{ Path = $path }
    $code = [int]$call.ReturnValue
    if ($code -eq 0) { return $true }
    if ($code -ne 4096) { return $false }
    $job = $call.Job
    $deadline = [datetime]::UtcNow.AddSeconds(600)
    while ([int]$job.JobState -lt 7) {
        if ([datetime]::UtcNow -ge $deadline) { throw "ValidateVirtualHardDisk did not finish within 600 s for '$path'" }
        Start-Sleep -Milliseconds 500
        $job = Get-CimInstance -InputObject $job
    }
    return ([int]$job.JobState -eq 7 -and [int]$job.ErrorCode -eq 0)
}

$paths = @()
if ($null -ne $Path) { $paths = @($Path) }

$disks = [System.Collections.Generic.List[object]]::new()
foreach ($p in $paths) {
    $text = [string]$p
    $exists = $false
    $testOk = $null
    $info = $null
    $problems = [System.Collections.Generic.List[string]]::new()
    $state = 'absent'
    if (-not (Test-HvmAbsolutePath $text)) {
        $problems.Add('not an absolute path')
    } else {
        $state = Get-HvmPathState $text
        if ($state -ne 'exists' -and $state -ne 'absent') { $problems.Add("cannot be checked: $state") }
    }
    if ($state -eq 'exists' -and -not [System.IO.Directory]::Exists($text)) {
        $exists = $true
        try {
            $testOk = Test-HvmVhd $text
            if (-not $testOk) { $problems.Add('Test-VHD found the disk or its parent chain unusable') }
        } catch {
            $testOk = $false
            $problems.Add("Test-VHD: $($_.Exception.Message)")
        }
        try {
            $info = ConvertTo-HvmVhdInfo (Get-HvmVhd $text)
        } catch {
            $info = $null
            $problems.Add("Get-VHD: $($_.Exception.Message)")
        }
    }
    $check = [pscustomobject]@{
        path    = $text
        exists  = $exists
        test_ok = $testOk
        vhd     = $info
        error   = ($problems -join '; ')
    }
    $disks.Add($check)
}

$out = [pscustomobject]@{
    disks = $disks.ToArray()
}
ConvertTo-Json -InputObject $out -Depth 8 -Compress
